"""A grid resolved into distinct cells (configurations) and runs (a cell and a seed).

Overrides are applied in the order base, grid ``overrides``, command-line ``--set`` / ``--data``,
cell. Cells resolving to the same configuration (the base cell appears in every family) are trained
once and shared.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pcbsiam.config import Config, ModelConfig, from_dict, load_config
from pcbsiam.errors import ConfigError
from pcbsiam.experiment.grid import Grid, load_grid

__all__ = ["Cell", "Plan", "Run", "cell_id", "plan_experiment"]

#: Settings that change how a run is carried out but not what it learns; left out of a cell's identity
#: so that, e.g., resuming on another device or with another cache folder finds the runs already done.
RUNTIME_SETTINGS = {
    "data": ("cache_dir", "workers"),
    "train": ("device", "log_every", "checkpoint_every"),
}


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
    prefix = {ModelConfig().mode: ""}.get(m.mode, f"{m.mode}-")  # the default mode keeps the short name
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
            data_keys.setdefault(data_key(c.config), len(data_keys))
        ordered = sorted(
            (
                (data_keys[data_key(c.config)], r, i, c, s)
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


def data_key(config: dict[str, Any]) -> str:
    """The data settings of a config dict as text: runs with equal keys can share decoded data."""
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
