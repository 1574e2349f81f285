"""Running a plan: train every unfinished run, resume interrupted ones, record failures, then report.

A run whose ``summary.json`` exists is skipped; one with ``checkpoints/last.pt`` but no summary is
resumed, so an interrupted experiment continues where it stopped when the command is repeated.
Only one process should work on an output folder at a time.
"""

from __future__ import annotations

import json
import logging
import time
import traceback
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pcbsiam.config import Config
from pcbsiam.errors import ConfigError
from pcbsiam.experiment.grid import Grid
from pcbsiam.experiment.plan import Run, data_key, plan_experiment
from pcbsiam.experiment.report import FAILURES, MANIFEST, ExperimentReport, write_report
from pcbsiam.io import write_json
from pcbsiam.train.fit import SplitData, fit, prepare_data

__all__ = ["run_experiment"]

log = logging.getLogger(__name__)


class _DataCache:
    """The decoded data of the last data settings asked for (one at a time, to bound memory)."""

    def __init__(self) -> None:
        self.key: str | None = None
        self.value: SplitData | BaseException | None = None

    def get(self, cfg: Config) -> SplitData:
        key = data_key(cfg.to_dict())
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
    one :func:`~pcbsiam.train.fit.prepare_data` result.

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
