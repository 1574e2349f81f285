"""The report of an experiment folder, read from its run records: ``results.json``, ``tables.md``
(one markdown table per family, with the paper's figures beside ours) and ``learning_curves.png``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pcbsiam.errors import ConfigError
from pcbsiam.evaluation.metrics import format_mean_std, mean_std
from pcbsiam.io import read_jsonl, write_json, write_text

__all__ = ["ExperimentReport", "render_tables", "run_figures", "write_report"]

log = logging.getLogger(__name__)

MANIFEST = "experiment.json"
FAILURES = "failures.jsonl"
RESULTS = "results.json"
TABLES = "tables.md"
FIGURE = "learning_curves.png"

#: The validation figures of a run's best epoch: output name -> metrics.jsonl key.
EPOCH_FIGURES = {
    "accuracy": "val_accuracy",
    "auroc": "val_auroc",
    "balanced_accuracy": "val_balanced_accuracy",
    "recall": "val_recall",
    "false_alarm_rate": "val_false_alarm_rate",
}


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


def _epoch_records(run_dir: Path) -> dict[int, dict[str, Any]]:
    """Epoch records of a run by epoch (the last record of an epoch wins)."""
    return {r["epoch"]: r for r in read_jsonl(run_dir / "metrics.jsonl") if r.get("kind") == "epoch"}


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
    for rec in read_jsonl(out / FAILURES):
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
        from pcbsiam.viz.plots import plot_learning_curve_grid

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
        'training patches); "training (s)": mean training time of a run (validation passes excluded).'
    )
    lines += [
        "",
        '"paper (%)": the paper\'s test accuracy (mean ± std over 6 runs) where the grid gives it; its test set '
        "is balanced (2,500 / 2,500), so it compares best with our balanced accuracy (`balanced_accuracy` in "
        "results.json).",
    ]
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
