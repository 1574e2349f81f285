"""Repeated ablation experiments: a grid of configurations trained with several seeds, summarised as
the paper's tables (Dai et al. 2023, Tables 1-4) and learning-curve figure (Fig. 4).

A grid file (YAML) names a base config, overrides shared by every cell, the seeds, and families of
cells; each cell is a list of ``section.key=value`` overrides::

    base: cpu-small                     # preset name or config file
    overrides: ["train.epochs=2"]       # applied to every cell
    seeds: [0, 1, 2]                    # repeat r trains with train.seed = seeds[r]; default 0..N-1
    repeats: 3                          # default number of repeats
    families:
      backbone:
        title: "Table 1: backbone"
        paper: {resnet50: "95.42 ± 0.31"}   # the paper's accuracy (%) where known
        cells: {resnet18: [], resnet50: ["model.backbone=resnet50"]}

Overrides are applied in the order base, grid ``overrides``, command-line ``--set`` / ``--data``,
cell. Quote an override holding brackets (``"model.scales=[2,3,4]"``), or YAML reads it as a list.

Cells resolving to the same configuration (the base cell appears in every family) are trained once
and shared. The output folder::

    experiment.json        the resolved plan: families, variants, cells with their configs, seeds
    runs/<cell>/seed<k>/   one training run folder each (see :mod:`pcbsiam.training`)
    failures.jsonl         one record per run that raised (the others go on)
    results.json           per cell: per-seed figures and mean ± std; per family: table rows
    tables.md              one markdown table per family, with the paper's figures beside ours
    learning_curves.png    validation accuracy per epoch, mean over seeds, one panel per family

A run whose ``summary.json`` exists is skipped; one with ``checkpoints/last.pt`` but no summary is
resumed, so an interrupted experiment continues where it stopped when the command is repeated.
Only one process should work on an output folder at a time.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import time
import traceback
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from pcbsiam.config import Config, from_dict, load_config, resolve_shipped
from pcbsiam.errors import ConfigError
from pcbsiam.io import write_json, write_text
from pcbsiam.metrics import format_mean_std, mean_std
from pcbsiam.training import SplitData, fit, prepare_data

__all__ = [
    "Cell",
    "ExperimentReport",
    "Family",
    "Grid",
    "Plan",
    "Run",
    "GRID_DIR",
    "load_grid",
    "plan_experiment",
    "render_tables",
    "run_experiment",
    "run_figures",
    "write_report",
]

log = logging.getLogger(__name__)

GRID_DIR = Path(__file__).parent / "configs" / "grids"
MANIFEST = "experiment.json"
FAILURES = "failures.jsonl"
RESULTS = "results.json"
TABLES = "tables.md"
FIGURE = "learning_curves.png"

#: Settings that change how a run is carried out but not what it learns; left out of a cell's identity
#: so that, e.g., resuming on another device or with another cache folder finds the runs already done.
RUNTIME_SETTINGS = {
    "data": ("cache_dir", "workers"),
    "train": ("device", "log_every", "checkpoint_every"),
}

#: The validation figures of a run's best epoch: output name -> metrics.jsonl key.
EPOCH_FIGURES = {
    "accuracy": "val_accuracy",
    "auroc": "val_auroc",
    "balanced_accuracy": "val_balanced_accuracy",
    "recall": "val_recall",
    "false_alarm_rate": "val_false_alarm_rate",
}


# --------------------------------------------------------------------------------------------- grid


@dataclass
class Family:
    """One table of the paper: variants of one setting.

    Attributes:
        name: short name (``backbone``), the figure panel's title.
        title: the table's heading (``Table 1: backbone``).
        cells: variant name -> its overrides.
        paper: variant name -> the paper's accuracy in % (a number or a text such as ``"95.42 ± 0.31"``).
    """

    name: str
    title: str
    cells: dict[str, list[str]]
    paper: dict[str, float | str | None] = field(default_factory=dict)


@dataclass
class Grid:
    """A grid file: a base config, shared overrides, seeds and families of cells."""

    base: str
    families: dict[str, Family]
    overrides: list[str] = field(default_factory=list)
    seeds: list[int] | None = None
    repeats: int | None = None
    description: str = ""
    source: str = ""

    def seeds_for(self, repeats: int | None = None) -> list[int]:
        """The seeds of ``repeats`` repeats (default: the grid's ``repeats``, else all its seeds, else 1)."""
        n = repeats if repeats is not None else self.repeats
        if n is None:
            n = len(self.seeds) if self.seeds else 1
        if n < 1:
            raise ConfigError(f"the number of repeats must be at least 1, got {n}")
        if self.seeds is None:
            return list(range(n))
        if n > len(self.seeds):
            raise ConfigError(
                f"{n} repeats asked but the grid {self.source or ''} lists only {len(self.seeds)} seeds "
                f"{self.seeds}; add seeds to the grid or ask for fewer repeats"
            )
        return list(self.seeds[:n])


def _override_list(value: Any, where: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(
            f"{where} must be a list of 'section.key=value' strings, got {value!r}; quote an override "
            'holding brackets or commas, e.g. "model.scales=[2,3,4]"'
        )
    return list(value)


def _check_keys(d: dict, allowed: set[str], where: str) -> None:
    unknown = sorted(set(map(str, d)) - allowed)
    if unknown:
        raise ConfigError(f"unknown key(s) {unknown} in {where}; valid: {sorted(allowed)}")


def grid_from_dict(d: dict[str, Any], source: str = "") -> Grid:
    """Build and check a :class:`Grid` from the dict of a grid file.

    Raises:
        ConfigError: on a missing or malformed entry, with its place in the file.
    """
    where = source or "the grid"
    if not isinstance(d, dict):
        raise ConfigError(f"{where} must be a YAML mapping with 'base' and 'families'")
    _check_keys(d, {"base", "overrides", "seeds", "repeats", "families", "description"}, where)
    if not d.get("base"):
        raise ConfigError(f"{where} has no 'base': give a preset name (cpu-small, paper) or a config file")
    fams = d.get("families")
    if not isinstance(fams, dict) or not fams:
        raise ConfigError(f"{where} has no 'families': give at least one family with 'cells'")
    seeds = d.get("seeds")
    if seeds is not None and (
        not isinstance(seeds, list)
        or not seeds
        or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds)
    ):
        raise ConfigError(f"'seeds' in {where} must be a non-empty list of integers, got {seeds!r}")
    if seeds is not None and len(set(seeds)) != len(seeds):
        raise ConfigError(f"'seeds' in {where} repeats a seed: {seeds}")
    repeats = d.get("repeats")
    if repeats is not None and (not isinstance(repeats, int) or repeats < 1):
        raise ConfigError(f"'repeats' in {where} must be a positive integer, got {repeats!r}")
    families: dict[str, Family] = {}
    for fname, fd in fams.items():
        fname = str(fname)
        fwhere = f"family {fname!r} of {where}"
        if not isinstance(fd, dict):
            raise ConfigError(f"{fwhere} must be a mapping with 'cells' (and optionally 'title', 'paper')")
        _check_keys(fd, {"title", "cells", "paper"}, fwhere)
        cells_d = fd.get("cells")
        if not isinstance(cells_d, dict) or not cells_d:
            raise ConfigError(f"{fwhere} has no 'cells': give variant names with their overrides")
        cells = {str(v): _override_list(o, f"cell {v!r} of {fwhere}") for v, o in cells_d.items()}
        paper_d = fd.get("paper") or {}
        if not isinstance(paper_d, dict):
            raise ConfigError(f"'paper' of {fwhere} must map variant names to the paper's accuracy (%)")
        paper: dict[str, float | str | None] = {}
        for v, x in paper_d.items():
            if str(v) not in cells:
                raise ConfigError(f"'paper' of {fwhere} names {v!r}, which is not one of its cells {list(cells)}")
            if x is not None and (isinstance(x, bool) or not isinstance(x, int | float | str)):
                raise ConfigError(f"the paper's figure for {v!r} in {fwhere} must be a number or text, got {x!r}")
            paper[str(v)] = x
        families[fname] = Family(fname, str(fd.get("title") or fname), cells, paper)
    return Grid(
        base=str(d["base"]),
        families=families,
        overrides=_override_list(d.get("overrides"), f"'overrides' of {where}"),
        seeds=list(seeds) if seeds is not None else None,
        repeats=repeats,
        description=str(d.get("description") or ""),
        source=source,
    )


def resolve_grid(name_or_path: str | Path) -> Path:
    """A grid file path, or the name of a shipped grid (``paper``, ``cpu``)."""
    return resolve_shipped(name_or_path, GRID_DIR, "grid")


def load_grid(name_or_path: str | Path) -> Grid:
    """Read a grid file (or a shipped grid by name) and check it."""
    p = resolve_grid(name_or_path)
    try:
        d = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(
            f'{p} is not valid YAML (quote overrides holding brackets, e.g. "model.scales=[2,3,4]"): {exc}'
        ) from exc
    return grid_from_dict(d, str(p))


# --------------------------------------------------------------------------------------------- plan


def _identity(cfg: Config) -> dict[str, Any]:
    """The settings of ``cfg`` that differ from the defaults, without the seed and runtime settings.

    Two cells are the same experiment exactly when their identities are equal. Comparing against
    the defaults (rather than hashing the whole config) keeps a cell's identity, and so its run
    folder, when a later version of pcbsiam adds a setting with a default value.
    """
    values = cfg.to_dict()
    defaults = Config().to_dict()
    values["train"].pop("seed", None)
    for section, names in RUNTIME_SETTINGS.items():
        for name in names:
            values.get(section, {}).pop(name, None)
    if isinstance(values.get("model", {}).get("scales"), list):
        values["model"]["scales"] = sorted(set(values["model"]["scales"]))
    return {
        section: {k: v for k, v in sorted(fields.items()) if defaults.get(section, {}).get(k, object()) != v}
        for section, fields in sorted(values.items())
    }


def cell_id(cfg: Config) -> str:
    """Folder name of a cell: a readable summary of the main settings and a hash of its identity."""
    digest = hashlib.sha1(json.dumps(_identity(cfg), sort_keys=True, default=str).encode()).hexdigest()[:10]
    m = cfg.model
    scales = "".join(str(s) for s in sorted(set(m.scales)))
    loss = cfg.train.loss.replace("+", "_")
    mode = getattr(m, "mode", "paper")
    prefix = "" if mode == "paper" else f"{mode}-"
    return f"{prefix}{m.backbone}-d{m.embedding_dim}-s{scales}-{loss}-{digest}"


@dataclass
class Cell:
    """One distinct configuration of the grid.

    Attributes:
        id: folder name under ``runs/``.
        config: the resolved config dict (its ``train.seed`` is replaced by each repeat's seed).
        variants: the ``(family, variant)`` pairs that resolve to this configuration.
        overrides: the overrides of the first variant naming it.
    """

    id: str
    config: dict[str, Any]
    variants: list[tuple[str, str]]
    overrides: list[str]

    def run_config(self, seed: int) -> Config:
        """A fresh :class:`Config` of this cell trained with ``seed``."""
        d = copy.deepcopy(self.config)
        d["train"]["seed"] = seed
        return from_dict(d)


@dataclass
class Run:
    """One training run: a cell and a seed, in ``out/runs/<cell>/seed<seed>``."""

    cell: Cell
    seed: int
    path: Path

    @property
    def done(self) -> bool:
        """The run has finished (its summary is written)."""
        return (self.path / "summary.json").is_file()

    @property
    def resumable(self) -> bool:
        """The run stopped after writing a checkpoint."""
        return (self.path / "checkpoints" / "last.pt").is_file()

    @property
    def name(self) -> str:
        """``<cell>/seed<k>``."""
        return f"{self.cell.id}/seed{self.seed}"


@dataclass
class Plan:
    """A grid resolved into distinct cells, with the seeds of every cell.

    Attributes:
        grid: the grid.
        seeds: one per repeat.
        cells: cell id -> cell, in the order of first appearance in the grid.
        families: family -> variant -> cell id.
        overrides: the command-line overrides applied to every cell.
    """

    grid: Grid
    seeds: list[int]
    cells: dict[str, Cell]
    families: dict[str, dict[str, str]]
    overrides: list[str] = field(default_factory=list)

    def select(self, only: Sequence[str] | None = None) -> list[Cell]:
        """The cells named by ``only``: family names, variant names, ``family/variant`` or cell ids.

        Raises:
            ConfigError: when a name matches nothing.
        """
        if not only:
            return list(self.cells.values())
        chosen: set[str] = set()
        for name in only:
            hits = {
                cid
                for fam, variants in self.families.items()
                for variant, cid in variants.items()
                if name in (fam, variant, f"{fam}/{variant}", cid)
            }
            if not hits:
                valid = sorted(self.families) + sorted({v for vs in self.families.values() for v in vs})
                raise ConfigError(f"--only {name!r} names no family, variant or cell of the grid; valid: {valid}")
            chosen |= hits
        return [c for cid, c in self.cells.items() if cid in chosen]

    def runs(self, out_dir: str | Path, only: Sequence[str] | None = None) -> list[Run]:
        """The runs of the selected cells, repeat by repeat (every cell's first seed comes first).

        Runs sharing data settings are kept together so that the decoded data is reused.
        """
        cells = self.select(only)
        data_keys: dict[str, int] = {}
        for c in cells:
            data_keys.setdefault(_data_key(c.config), len(data_keys))
        ordered = sorted(
            (
                (data_keys[_data_key(c.config)], r, i, c, s)
                for i, c in enumerate(cells)
                for r, s in enumerate(self.seeds)
            ),
            key=lambda t: t[:3],
        )
        root = Path(out_dir) / "runs"
        return [Run(c, s, root / c.id / f"seed{s}") for _, _, _, c, s in ordered]

    def manifest(self) -> dict[str, Any]:
        """The plan as JSON (``experiment.json``), enough to render the report without the grid file."""
        return {
            "grid": {
                "source": self.grid.source,
                "base": self.grid.base,
                "overrides": self.grid.overrides,
                "description": self.grid.description,
            },
            "command_overrides": self.overrides,
            "seeds": self.seeds,
            "families": {
                name: {
                    "title": fam.title,
                    "paper": fam.paper,
                    "variants": self.families[name],
                }
                for name, fam in self.grid.families.items()
            },
            "cells": {
                c.id: {
                    "variants": [f"{f}/{v}" for f, v in c.variants],
                    "overrides": c.overrides,
                    "config": c.config,
                }
                for c in self.cells.values()
            },
        }


def _data_key(config: dict[str, Any]) -> str:
    data = {k: v for k, v in config["data"].items() if k != "workers"}
    return json.dumps(data, sort_keys=True, default=str)


def plan_experiment(
    grid: Grid | str | Path,
    repeats: int | None = None,
    overrides: Sequence[str] | None = None,
    data_root: str | Path | None = None,
) -> Plan:
    """Resolve every cell of ``grid`` to a config and merge the cells that are the same experiment.

    Args:
        grid: a :class:`Grid`, a grid file or a shipped grid name.
        repeats: number of seeds per cell (default: the grid's).
        overrides: ``section.key=value`` applied to every cell, after the grid's own overrides.
        data_root: the data (sets ``data.root``, made absolute).

    Raises:
        ConfigError: on an invalid cell, naming its family and variant.
    """
    if not isinstance(grid, Grid):
        grid = load_grid(grid)
    seeds = grid.seeds_for(repeats)
    shared = [*grid.overrides, *(overrides or [])]
    if data_root is not None:
        shared.append(f"data.root={Path(data_root).expanduser().resolve()}")
    cells: dict[str, Cell] = {}
    families: dict[str, dict[str, str]] = {}
    for fam in grid.families.values():
        families[fam.name] = {}
        for variant, cell_overrides in fam.cells.items():
            try:
                cfg = load_config(grid.base, [*shared, *cell_overrides])
            except ConfigError as exc:
                raise ConfigError(f"cell {fam.name}/{variant} of {grid.source or 'the grid'}: {exc}") from exc
            cid = cell_id(cfg)
            if cid in cells:
                cells[cid].variants.append((fam.name, variant))
            else:
                cells[cid] = Cell(cid, cfg.to_dict(), [(fam.name, variant)], list(cell_overrides))
            families[fam.name][variant] = cid
    return Plan(grid, seeds, cells, families, list(overrides or []))


# ---------------------------------------------------------------------------------------------- run


@dataclass
class ExperimentReport:
    """What an experiment command produced.

    Attributes:
        out_dir: the experiment folder.
        results: ``results.json``.
        tables: ``tables.md``.
        figure: ``learning_curves.png``, or None when it could not be drawn.
        finished: runs of the plan that have finished.
        total: runs in the plan.
        trained: runs attempted by this call.
        failed: runs of this call that raised, as failure records.
    """

    out_dir: Path
    results: Path
    tables: Path
    figure: Path | None
    finished: int
    total: int
    trained: int = 0
    failed: list[dict[str, Any]] = field(default_factory=list)


class _DataCache:
    """The decoded data of the last data settings asked for (one at a time, to bound memory)."""

    def __init__(self) -> None:
        self.key: str | None = None
        self.value: SplitData | BaseException | None = None

    def get(self, cfg: Config) -> SplitData:
        key = _data_key(cfg.to_dict())
        if key != self.key:
            self.key, self.value = key, None
            try:
                self.value = prepare_data(cfg)
            except Exception as exc:
                self.value = exc
        if isinstance(self.value, BaseException):
            raise self.value
        assert self.value is not None
        return self.value


def _eta(finished: list[tuple[Run, float]], remaining: Iterable[Run]) -> float | None:
    """Seconds left: each remaining run is expected to take as long as the finished runs of its cell,
    else of its backbone, else of all cells."""
    if not finished:
        return None
    by_cell: dict[str, list[float]] = {}
    by_backbone: dict[str, list[float]] = {}
    for run, sec in finished:
        by_cell.setdefault(run.cell.id, []).append(sec)
        by_backbone.setdefault(run.cell.config["model"]["backbone"], []).append(sec)
    overall = sum(s for _, s in finished) / len(finished)
    total = 0.0
    for run in remaining:
        same = by_cell.get(run.cell.id) or by_backbone.get(run.cell.config["model"]["backbone"])
        total += sum(same) / len(same) if same else overall
    return total


def _hms(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def _record_failure(out_dir: Path, run: Run, exc: BaseException) -> dict[str, Any]:
    rec = {
        "time": datetime.now(UTC).isoformat(timespec="seconds"),
        "cell": run.cell.id,
        "variants": [f"{f}/{v}" for f, v in run.cell.variants],
        "seed": run.seed,
        "run": str(run.path.relative_to(out_dir)),
        "error": f"{type(exc).__name__}: {exc}",
        "traceback": "".join(traceback.format_exception(exc)),
    }
    with open(out_dir / FAILURES, "a") as fh:
        fh.write(json.dumps(rec) + "\n")
    return rec


def run_experiment(
    grid: Grid | str | Path,
    out_dir: str | Path,
    repeats: int | None = None,
    overrides: Sequence[str] | None = None,
    data_root: str | Path | None = None,
    only: Sequence[str] | None = None,
    max_runs: int | None = None,
) -> ExperimentReport:
    """Train every run of ``grid`` not yet finished in ``out_dir``, then write the report.

    Finished runs are skipped, interrupted ones resumed from their last checkpoint; a run that
    raises is recorded in ``failures.jsonl`` and the others go on. Runs sharing data settings share
    one :func:`~pcbsiam.training.prepare_data` result.

    Args:
        grid: a :class:`Grid`, a grid file or a shipped grid name (``paper``, ``cpu``).
        out_dir: the experiment folder.
        repeats: seeds per cell (default: the grid's).
        overrides: ``section.key=value`` applied to every cell.
        data_root: the data (sets ``data.root``).
        only: train only these families, variants or cells (the report covers the whole grid).
        max_runs: train at most this many runs in this call (a chunk of a long experiment).

    Returns:
        The report; its ``failed`` lists this call's failures.

    Raises:
        ConfigError: on an invalid grid or cell, or when runs need training but no data root is set.
    """
    out = Path(out_dir)
    plan = plan_experiment(grid, repeats, overrides, data_root)
    selected = plan.runs(out, only)
    all_runs = plan.runs(out)
    todo = [r for r in selected if not r.done]
    if max_runs is not None:
        if max_runs < 0:
            raise ConfigError(f"--max-runs must be 0 or more, got {max_runs}")
        todo = todo[:max_runs]
    missing_root = sorted({r.cell.id for r in todo if not r.cell.config["data"].get("root")})
    if missing_root:
        raise ConfigError(
            f"no data root for {len(missing_root)} cell(s): pass --data ROOT or set data.root in the base"
        )
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / MANIFEST, plan.manifest())
    done_before = sum(r.done for r in all_runs)
    log.info(
        "experiment %s: %d cells x %d seeds = %d runs, %d finished, %d to train now",
        out,
        len(plan.cells),
        len(plan.seeds),
        len(all_runs),
        done_before,
        len(todo),
    )
    data = _DataCache()
    timings: list[tuple[Run, float]] = []
    failed: list[dict[str, Any]] = []
    for k, run in enumerate(todo, 1):
        resume = run.resumable
        variants = ", ".join(f"{f}/{v}" for f, v in run.cell.variants)
        log.info("run %d of %d: %s (%s)%s", k, len(todo), run.name, variants, " resuming" if resume else "")
        if not resume and (run.path / "metrics.jsonl").is_file():
            (run.path / "metrics.jsonl").unlink()  # records of an attempt that died before its first checkpoint
        t0 = time.perf_counter()
        try:
            cfg = run.cell.run_config(run.seed)
            fit(cfg, run.path, resume=resume, data=data.get(cfg))
        except Exception as exc:
            failed.append(_record_failure(out, run, exc))
            log.error("run %s failed: %s (recorded in %s)", run.name, failed[-1]["error"], out / FAILURES)
        timings.append((run, time.perf_counter() - t0))
        eta = _eta(timings, todo[k:])
        log.info(
            "run %d of %d ended in %s; %d left%s",
            k,
            len(todo),
            _hms(timings[-1][1]),
            len(todo) - k,
            f", about {_hms(eta)} to go" if eta is not None and k < len(todo) else "",
        )
    report = write_report(out)
    report.trained, report.failed = len(todo), failed
    return report


# ------------------------------------------------------------------------------------------- report


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line cut short by a kill
    return out


def _epoch_records(run_dir: Path) -> dict[int, dict[str, Any]]:
    """Epoch records of a run by epoch (the last record of an epoch wins)."""
    return {r["epoch"]: r for r in _read_jsonl(run_dir / "metrics.jsonl") if r.get("kind") == "epoch"}


def run_figures(run_dir: str | Path) -> dict[str, Any] | None:
    """The figures of a finished run: the validation figures of its best epoch, and its time.

    The best epoch is the one of best validation AUROC chosen by training (``summary.json``), or the
    last epoch when no AUROC was defined.

    Returns:
        ``{"accuracy", "auroc", "balanced_accuracy", "recall", "false_alarm_rate", "best_epoch",
        "train_seconds", "seconds"}`` (``train_seconds``: the training loops summed over epochs;
        ``seconds``: the wall time of the last fit call, validation included), or None when the run
        has not finished.
    """
    run_dir = Path(run_dir)
    try:
        summary = json.loads((run_dir / "summary.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    epochs = _epoch_records(run_dir)
    if not epochs:
        log.warning("%s has a summary but no epoch records; left out", run_dir)
        return None
    best = (summary.get("best") or {}).get("epoch")
    rec = epochs[best] if best in epochs else epochs[max(epochs)]
    figures: dict[str, Any] = {name: rec.get(key) for name, key in EPOCH_FIGURES.items()}
    figures["best_epoch"] = rec["epoch"]
    figures["train_seconds"] = sum(float(r.get("train_seconds") or 0.0) for r in epochs.values())
    figures["seconds"] = summary.get("seconds")
    return figures


def _mean_curve(run_dirs: Iterable[Path], keys: Sequence[str] = ("val_accuracy", "val_auroc")) -> list[dict[str, Any]]:
    """Epoch records averaged over runs (each epoch over the runs that have it)."""
    sums: dict[int, dict[str, list[float]]] = {}
    for d in run_dirs:
        for epoch, rec in _epoch_records(d).items():
            for key in keys:
                if isinstance(rec.get(key), int | float):
                    sums.setdefault(epoch, {}).setdefault(key, []).append(float(rec[key]))
    return [{"kind": "epoch", "epoch": e, **{k: sum(v) / len(v) for k, v in sums[e].items()}} for e in sorted(sums)]


def _open_failures(out: Path, seeds: Sequence[int], cells: dict[str, Any]) -> list[dict[str, Any]]:
    """The last failure of every run of the plan that has still not finished."""
    last: dict[tuple[str, int], dict[str, Any]] = {}
    for rec in _read_jsonl(out / FAILURES):
        last[(rec.get("cell"), rec.get("seed"))] = rec
    return [
        {k: rec.get(k) for k in ("cell", "variants", "seed", "run", "error", "time")}
        for (cid, seed), rec in last.items()
        if cid in cells and seed in seeds and not (out / "runs" / cid / f"seed{seed}" / "summary.json").is_file()
    ]


def write_report(out_dir: str | Path) -> ExperimentReport:
    """Render ``results.json``, ``tables.md`` and ``learning_curves.png`` from the finished runs.

    Raises:
        ConfigError: when ``out_dir`` holds no experiment.
    """
    out = Path(out_dir)
    try:
        manifest = json.loads((out / MANIFEST).read_text())
    except FileNotFoundError:
        raise ConfigError(f"{out} holds no experiment ({MANIFEST} is missing): run it with --grid first") from None
    seeds: list[int] = manifest["seeds"]
    cells: dict[str, Any] = {}
    curves: dict[str, list[dict[str, Any]]] = {}
    finished = 0
    for cid, cell in manifest["cells"].items():
        runs = {seed: run_figures(out / "runs" / cid / f"seed{seed}") for seed in seeds}
        done = [f for f in runs.values() if f is not None]
        finished += len(done)
        cells[cid] = {
            "variants": cell["variants"],
            "overrides": cell["overrides"],
            "runs": {str(s): f for s, f in runs.items()},
            "n": len(done),
            "mean_std": mean_std(done) if done else {},
        }
        curves[cid] = _mean_curve(out / "runs" / cid / f"seed{s}" for s, f in runs.items() if f is not None)
    families: dict[str, Any] = {}
    for fname, fam in manifest["families"].items():
        rows = []
        for variant, cid in fam["variants"].items():
            ms = cells[cid]["mean_std"]
            rows.append(
                {
                    "variant": variant,
                    "cell": cid,
                    "shared": len(cells[cid]["variants"]) > 1,
                    "paper": fam["paper"].get(variant),
                    "n": cells[cid]["n"],
                    "accuracy": ms.get("accuracy"),
                    "auroc": ms.get("auroc"),
                    "train_seconds": ms.get("train_seconds"),
                }
            )
        families[fname] = {"title": fam["title"], "rows": rows}
    results = {
        "grid": manifest["grid"],
        "command_overrides": manifest.get("command_overrides", []),
        "seeds": seeds,
        "figures": "validation figures of each run's epoch of best validation AUROC; the threshold is "
        "calibrated for accuracy on training patches",
        "runs_finished": finished,
        "runs_total": len(cells) * len(seeds),
        "cells": cells,
        "families": families,
        "open_failures": _open_failures(out, seeds, cells),
    }
    write_json(out / RESULTS, results)
    write_text(out / TABLES, render_tables(results))
    figure: Path | None = None
    try:
        from pcbsiam.plots import plot_learning_curve_grid

        panels = {
            fname: {variant: curves[cid] for variant, cid in fam["variants"].items()}
            for fname, fam in manifest["families"].items()
        }
        figure = plot_learning_curve_grid(panels, out / FIGURE, title="Validation accuracy (mean over seeds)")
    except Exception as exc:  # noqa: BLE001 - a figure must never lose the tables
        log.warning("learning curves not drawn: %s", exc)
    return ExperimentReport(out, out / RESULTS, out / TABLES, figure, finished, results["runs_total"])


def _paper_cell(value: float | str | None) -> str:
    if value is None:
        return ""
    if isinstance(value, int | float):
        return f"{value:.2f}"
    return str(value)


def _ms_cell(ms: dict[str, Any] | None, percent: bool) -> str:
    if not ms:
        return "–"
    return format_mean_std(ms["mean"], ms["std"], percent=percent)


def render_tables(results: dict[str, Any]) -> str:
    """Markdown of ``results`` (as in ``results.json``): one table per family, in the paper's form."""
    grid = results["grid"]
    seeds = results["seeds"]
    lines = [f"# {grid.get('description') or 'Experiment ' + Path(grid.get('source') or '').stem}", ""]
    sets = [*grid.get("overrides", []), *results.get("command_overrides", [])]
    lines.append(
        f"Base config `{grid['base']}`"
        + (f" with {', '.join(f'`{s}`' for s in sets)}" if sets else "")
        + f"; seeds {', '.join(map(str, seeds))}; {results['runs_finished']} of {results['runs_total']} runs "
        "finished. Figures: mean ± sample standard deviation over the finished runs of the validation "
        "figures at each run's epoch of best validation AUROC (threshold calibrated for accuracy on "
        'training patches); "training (s)": mean training time of a run (validation passes excluded). '
        '"paper (%)": the paper\'s accuracy where the grid gives it.'
    )
    shared_any = False
    for fam in results["families"].values():
        lines += ["", f"## {fam['title']}", ""]
        lines.append("| variant | accuracy (%) mean ± std | AUROC mean ± std | training (s) | n runs | paper (%) |")
        lines.append("| --- | --- | --- | ---: | --- | --- |")
        for row in fam["rows"]:
            mark = " \\*" if row["shared"] else ""
            shared_any |= row["shared"]
            secs = row.get("train_seconds")
            secs_cell = f"{secs['mean']:.0f}" if secs else "–"
            lines.append(
                f"| {row['variant']}{mark} | {_ms_cell(row['accuracy'], True)} | {_ms_cell(row['auroc'], False)} "
                f"| {secs_cell} | {row['n']} | {_paper_cell(row['paper'])} |"
            )
    if shared_any:
        lines += ["", "\\* the same configuration, and so the same runs, appears in more than one table."]
    if results.get("open_failures"):
        lines += ["", "## Runs that failed and have not finished since", ""]
        lines += [f"- `{f['run']}`: {f['error']}" for f in results["open_failures"]]
    return "\n".join(lines) + "\n"
