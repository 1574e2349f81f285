"""The main job on embedded data: synthetic boards -> train -> calibrate -> evaluate -> inspect."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from pcbsiam.config import load_config
from pcbsiam.data.sources import patches_of, read_boards
from pcbsiam.data.store import load_store
from pcbsiam.data.synth import write_dataset
from pcbsiam.io import write_json
from pcbsiam.training import fit

log = logging.getLogger(__name__)


def run_demo(out: str | Path, boards: int = 48, size: int = 384, seed: int = 0, preset: str = "tiny") -> dict:
    """Run every stage on freshly generated synthetic boards and write ``out/report.json``.

    Returns:
        The report (each stage's figures and the paths of what it wrote).
    """
    out = Path(out)
    report: dict = {"stages": {}}
    t0 = time.perf_counter()
    data_root = out / "synthetic"
    if not (data_root / "PCBData" / "trainval.txt").is_file():
        log.info("writing %d synthetic boards to %s", boards, data_root)
        write_dataset(data_root, boards=boards, seed=seed, size=size, groups=4)
    cfg = load_config(preset, [f"data.root={data_root}"])
    store = load_store(read_boards(data_root))
    report["stages"]["data"] = {"root": str(data_root), **patches_of(store, cfg.data.patch).stats()}
    run_dir = out / "run"
    summary = fit(cfg, run_dir, resume=(run_dir / "checkpoints" / "last.pt").is_file())
    report["stages"]["train"] = {"run": str(run_dir), "best": summary["best"], "seconds": round(summary["seconds"], 1)}
    report["seconds"] = round(time.perf_counter() - t0, 1)
    write_json(out / "report.json", report)
    return report


def format_summary(report: dict) -> str:
    """A short plain-text table of the demo's figures."""
    lines = ["stage      figure"]
    d = report["stages"]["data"]
    lines.append(f"data       {d['patches']} patches, {d['defective']} defective ({d['defective_share']:.1%})")
    if "train" in report["stages"]:
        b = report["stages"]["train"]["best"]
        lines.append(f"train      best epoch {b['epoch']}: val accuracy {b['val_accuracy']:.3f}, AUROC {b['val_auroc']:.3f}")
    lines.append(f"total      {report['seconds']} s")
    return "\n".join(lines) + "\n" + json.dumps({"report": report.get("path")})
