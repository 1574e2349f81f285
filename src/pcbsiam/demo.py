"""The main job on embedded data: synthetic boards -> train -> calibrate -> evaluate -> inspect, then the ready
model on a real DeepPCB board it did not train on."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from pcbsiam.config import load_config
from pcbsiam.data.images import load_gray
from pcbsiam.data.sources import patches_of, read_boards
from pcbsiam.data.store import load_store
from pcbsiam.data.synth import write_dataset
from pcbsiam.deploy.inspector import Inspector
from pcbsiam.errors import ConfigError
from pcbsiam.evaluation.evaluate import calibrate_model, evaluate_models
from pcbsiam.io import read_jsonl, write_json
from pcbsiam.train.fit import fit
from pcbsiam.viz.overlay import render_overlay
from pcbsiam.viz.plots import plot_distance_histograms, plot_roc

log = logging.getLogger(__name__)

HEADLINE = ("accuracy", "balanced_accuracy", "recall", "false_alarm_rate", "auroc")
#: The shipped example pair the demo inspects with the ready model (``pcbsiam.ready``).
READY_EXAMPLE = "20085003"


def run_demo(
    out: str | Path,
    boards: int = 48,
    size: int = 384,
    seed: int = 0,
    preset: str = "demo",
    overrides: list[str] | None = None,
) -> dict:
    """Run every stage on freshly generated synthetic boards and write ``out/report.json``.

    Finished stages are reused when the demo is run again into the same folder (training resumes).

    Returns:
        The report: each stage's figures and the paths of what it wrote.
    """
    out = Path(out)
    t0 = time.perf_counter()
    report: dict = {"stages": {}, "path": str(out / "report.json")}
    data_root = out / "synthetic"
    cfg = load_config(preset, [f"data.root={data_root}", *(overrides or [])])
    if cfg.data.val_fraction == 0:
        raise ConfigError("the demo evaluates and inspects validation boards: data.val_fraction must be above 0")
    if not (data_root / "PCBData" / "trainval.txt").is_file():
        log.info("stage 1/6: writing %d synthetic boards to %s", boards, data_root)
        write_dataset(data_root, boards=boards, seed=seed, size=size, groups=4)
    store = load_store(read_boards(data_root))
    report["stages"]["data"] = {"root": str(data_root), **patches_of(store, cfg.data.patch).stats()}

    log.info("stage 2/6: training (%s preset)", preset)
    run_dir = out / "run"
    resume = (run_dir / "checkpoints" / "last.pt").is_file()
    before = epoch_seconds(run_dir) if resume else {}
    summary = fit(cfg, run_dir, resume=resume)
    report["stages"]["train"] = train_stage(run_dir, summary, before, epoch_seconds(run_dir))

    log.info("stage 3/6: calibrating the threshold on the training boards")
    bundle = calibrate_model(run_dir, data_root)
    bundle_path = bundle.save(out / "model.bundle")
    report["stages"]["calibrate"] = {
        "bundle": str(bundle_path),
        "threshold": bundle.threshold,
        "train_accuracy": bundle.calibration["value"],
    }

    log.info("stage 4/6: evaluating on the validation boards, beside the classical comparison")
    result, curves = evaluate_models([bundle_path], data_root, baseline=True)
    plots = [
        plot_distance_histograms(
            *curves["model"],
            out / "distances.png",
            title="validation patches",
            xlabel=bundle.model.score_label,
        ),
        plot_roc({n: c[:2] for n, c in curves.items()}, out / "roc.png"),
    ]
    report["stages"]["evaluate"] = {
        "patches": result["models"]["model"]["n"],
        "methods": {n: {k: r[k] for k in HEADLINE} for n, r in result["models"].items()},
        "plots": [str(p) for p in plots],
    }
    write_json(out / "evaluation.json", result)

    log.info("stage 5/6: inspecting one whole validation board")
    val_name = sorted(bundle.calibration["val_items"])[0]
    pair = next(p for p in store.pairs if p.name == val_name)
    tested = load_gray(pair.tested)
    inspection = Inspector(bundle, overlap=0.5).inspect(tested, load_gray(pair.template))
    render_overlay(tested, inspection, out / "overlay.png", truth=pair.boxes)
    write_json(out / "inspection.json", inspection.to_dict())
    report["stages"]["inspect"] = {
        "board": pair.name,
        "annotated_defects": len(pair.boxes),
        "verdict": "defective" if inspection.defective else "pass",
        "shift": inspection.shift,
        "overlay": str(out / "overlay.png"),
    }
    log.info("stage 6/6: the ready model (--model deeppcb) on a real DeepPCB board it did not train on")
    report["stages"]["ready"] = ready_stage(out / "ready")
    report["seconds"] = round(time.perf_counter() - t0, 1)
    write_json(out / "report.json", report)
    return report


def ready_stage(out: Path, example: str = READY_EXAMPLE) -> dict:
    """Inspect one shipped example pair with the ready model; write ``out/inspection.json`` and ``out/overlay.png``.

    Returns:
        The board, its annotated defects, the verdict, how many tiles were flagged and how many of the annotated
        defects lie in a flagged tile.
    """
    from pcbsiam.deploy.bundle import load_bundle
    from pcbsiam.ready import example_pairs

    pair = next(p for p in example_pairs() if p.name == example)
    bundle = load_bundle("deeppcb")
    tested = load_gray(pair.tested)
    inspection = Inspector(bundle).inspect(tested, load_gray(pair.template))
    render_overlay(tested, inspection, out / "overlay.png", truth=pair.boxes)
    write_json(out / "inspection.json", inspection.to_dict())
    return {
        "board": pair.name,
        "annotated_defects": len(pair.boxes),
        "verdict": "defective" if inspection.defective else "pass",
        "defective_tiles": sum(t.defective for t in inspection.tiles),
        "defects_in_flagged_tiles": int(inspection.flags(pair.boxes).sum()),
        "overlay": str(out / "overlay.png"),
    }


def epoch_seconds(run_dir: Path) -> dict[int, float]:
    """Training seconds of each epoch the run folder's ``metrics.jsonl`` records (``{}`` for no run yet)."""
    records = read_jsonl(run_dir / "metrics.jsonl")
    return {int(r["epoch"]): float(r.get("train_seconds", 0.0)) for r in records if r.get("kind") == "epoch"}


def train_stage(run_dir: Path, summary: dict, before: dict[int, float], after: dict[int, float]) -> dict:
    """The demo's training figures, saying whether the run was trained now, resumed or reused.

    A run that had already trained every epoch is reused: :func:`~pcbsiam.train.fit.fit` returns at
    once, so its ``seconds`` (this call's) would read 0.0; the time reported is then the run's own,
    the sum of its epochs' training seconds.

    Args:
        run_dir: the run folder.
        summary: what :func:`~pcbsiam.train.fit.fit` returned.
        before: :func:`epoch_seconds` of the run folder before ``fit``.
        after: :func:`epoch_seconds` after it.

    Returns:
        ``run``, ``best``, ``seconds`` and ``status``: ``trained``, ``resumed`` (it had trained some
        epochs) or ``reused`` (``seconds`` is then the earlier epochs' training time).
    """
    reused = bool(before) and after.keys() == before.keys()
    status = "reused" if reused else "resumed" if before else "trained"
    seconds = sum(after.values()) if reused else summary["seconds"]
    return {"run": str(run_dir), "best": summary["best"], "seconds": round(seconds, 1), "status": status}


def format_summary(report: dict) -> str:
    """A short plain-text summary of the demo's figures."""
    st = report["stages"]
    d = st["data"]
    lines = [
        f"data       {d['patches']} patches of synthetic boards, {d['defective']} defective "
        f"({d['defective_share']:.1%})"
    ]
    t = st["train"]
    b = t["best"]
    when = {
        "reused": f"reused {t['run']} (trained earlier, {t['seconds']} s of training)",
        "resumed": f"{t['seconds']} s (resumed {t['run']})",
    }.get(t.get("status", "trained"), f"{t['seconds']} s")
    lines.append(f"train      {when}; best epoch {b['epoch']}: val AUROC {b['val_auroc']:.3f}")
    lines.append(
        f"calibrate  threshold {st['calibrate']['threshold']:.4f} (best training accuracy "
        f"{st['calibrate']['train_accuracy']:.3f})"
    )
    lines.append(f"evaluate   {st['evaluate']['patches']} validation patches")
    lines.append("           " + "".join(f"{k:>19}" for k in HEADLINE))
    for name, m in st["evaluate"]["methods"].items():
        cells = "".join(f"{'-' if m[k] is None else format(m[k], '.3f'):>19}" for k in HEADLINE)
        lines.append(f"  {name:<9}{cells}")
    i = st["inspect"]
    lines.append(
        f"inspect    board {i['board']} ({i['annotated_defects']} annotated defects): {i['verdict']}, "
        f"shift {i['shift']['dy']},{i['shift']['dx']} -> {i['overlay']}"
    )
    r = st.get("ready")
    if r:
        lines.append(
            f"ready      --model deeppcb on DeepPCB board {r['board']} ({r['annotated_defects']} annotated defects): "
            f"{r['verdict']}, {r['defective_tiles']} tiles flagged holding {r['defects_in_flagged_tiles']} of the "
            f"defects -> {r['overlay']}"
        )
    lines.append(f"total      {report['seconds']} s")
    lines.append(f"report     {report['path']}")
    return "\n".join(lines)
