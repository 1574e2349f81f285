"""The demo's report of its training stage: trained now, resumed, or reused from an earlier run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pcbsiam.demo import epoch_seconds, format_summary, ready_stage, train_stage

BEST = {"epoch": 1, "val_accuracy": 0.9, "val_auroc": 0.95, "threshold": 0.4}


def _metrics(run: Path, seconds: list[float]) -> None:
    run.mkdir(parents=True, exist_ok=True)
    records = [{"kind": "step", "epoch": 0, "step": 0, "loss": 1.0}]
    records += [{"kind": "epoch", "epoch": e, "train_seconds": s, "val_auroc": 0.9} for e, s in enumerate(seconds)]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))


def _report(train: dict) -> dict:
    methods = {"model": dict.fromkeys(("accuracy", "balanced_accuracy", "recall", "false_alarm_rate", "auroc"), 0.9)}
    return {
        "stages": {
            "data": {"patches": 100, "defective": 10, "defective_share": 0.1},
            "train": train,
            "calibrate": {"threshold": 0.4, "train_accuracy": 0.9},
            "evaluate": {"patches": 50, "methods": methods},
            "inspect": {
                "board": "b",
                "annotated_defects": 2,
                "verdict": "defective",
                "shift": {"dy": 0, "dx": 0},
                "overlay": "o.png",
            },
        },
        "seconds": 3.0,
        "path": "demo_out/report.json",
    }


def test_a_reused_run_reports_its_own_training_time(tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert epoch_seconds(run) == {}
    _metrics(run, [12.25, 13.0])
    before = epoch_seconds(run)
    assert before == {0: 12.25, 1: 13.0}
    # the second `make demo`: fit resumes a finished run, trains nothing and returns its own 0.0 s
    stage = train_stage(run, {"best": BEST, "seconds": 0.01}, before, epoch_seconds(run))
    assert stage["status"] == "reused" and stage["seconds"] == 25.2
    line = next(x for x in format_summary(_report(stage)).splitlines() if x.startswith("train"))
    assert "reused" in line and "25.2 s" in line and "0.0 s" not in line


def test_a_trained_or_resumed_run_reports_this_call(tmp_path: Path) -> None:
    run = tmp_path / "run"
    _metrics(run, [5.0, 6.0])
    fresh = train_stage(run, {"best": BEST, "seconds": 14.04}, {}, epoch_seconds(run))
    assert (fresh["status"], fresh["seconds"]) == ("trained", 14.0)
    line = next(x for x in format_summary(_report(fresh)).splitlines() if x.startswith("train"))
    assert line.startswith("train      14.0 s; best epoch 1")
    resumed = train_stage(run, {"best": BEST, "seconds": 7.0}, {0: 5.0}, epoch_seconds(run))
    assert (resumed["status"], resumed["seconds"]) == ("resumed", 7.0)
    assert "resumed" in format_summary(_report(resumed))


def test_the_ready_stage_inspects_a_shipped_example_with_the_ready_model(tmp_path: Path) -> None:
    stage = ready_stage(tmp_path / "ready")
    assert stage["board"] == "20085003" and stage["annotated_defects"] > 0
    assert stage["verdict"] == "defective" and 0 < stage["defects_in_flagged_tiles"] <= stage["annotated_defects"]
    assert (tmp_path / "ready" / "overlay.png").is_file() and (tmp_path / "ready" / "inspection.json").is_file()
    report = _report({"run": "r", "best": BEST, "seconds": 1.0, "status": "trained"})
    report["stages"]["ready"] = stage
    line = next(x for x in format_summary(report).splitlines() if x.startswith("ready"))
    assert "--model deeppcb" in line and "20085003" in line


def test_the_demo_refuses_a_run_without_validation_boards_before_writing_anything(tmp_path: Path) -> None:
    from pcbsiam.demo import run_demo
    from pcbsiam.errors import ConfigError

    with pytest.raises(ConfigError, match="data.val_fraction must be above 0"):
        run_demo(tmp_path / "demo", overrides=["data.val_fraction=0"])
    assert not (tmp_path / "demo").exists()
