"""Out-of-group calibration: thresholds chosen on the other folds' held-out scores, and a model calibrated on
a cross-validation's held-out scores (``pcbsiam calibrate --from-cv``). The folds are written by hand."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pcbsiam.cli.main import main
from pcbsiam.config import load_config
from pcbsiam.deploy.bundle import load_bundle
from pcbsiam.errors import ConfigError
from pcbsiam.evaluation.calibration import choose_threshold
from pcbsiam.experiment.cv import (
    OUT_OF_GROUP,
    calibrate_from_cv,
    cv_report,
    fold_dir,
    held_out,
    out_of_group_thresholds,
    summarise,
)

GROUPS = ["group1", "group2", "group3"]


def _scores(seed: int, shift: float, n: int = 60) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Scores of ``n`` patches (a third defective) whose defective ones sit ``shift`` lower than usual."""
    rng = np.random.default_rng(seed)
    labels = (np.arange(n) % 3 == 0).astype(np.int64)
    scores = rng.normal(0.0, 1.0, n) + labels * (4.0 - shift)
    defect = labels * (1 + np.arange(n) % 2)  # types 1 (open) and 2 (short)
    return scores, labels, defect


def write_cv(out: Path, config: dict, folds: int = 3, inference: dict | None = None) -> None:
    """A cross-validation folder of ``folds`` finished folds, as ``pcbsiam cv`` writes it."""
    out.mkdir(parents=True)
    request = {"config": config, "groups": GROUPS, "policies": ["accuracy", "recall:0.995"], "config_name": "x"}
    (out / "cv.json").write_text(json.dumps(request))
    for k, group in enumerate(GROUPS[:folds]):
        run = fold_dir(out, group)
        run.mkdir()
        scores, labels, defect = _scores(k, shift=1.5 * k)
        np.savez(run / "scores.npz", model=scores, classical=scores * 10, labels=labels, defect=defect)
        own = {"accuracy": 3.0, "recall:0.995": 2.5}  # thresholds of the training patches: too high
        record = {
            "group": group,
            "patches": len(labels),
            "defective": int(labels.sum()),
            "thresholds": {"model": own, "classical": {p: 10 * t for p, t in own.items()}},
            "inference": inference or {},
            "train_seconds": 1.0,
        }
        (run / "fold.json").write_text(json.dumps(record))


@pytest.fixture()
def run_config(tiny_run: Path) -> dict:
    return load_config(tiny_run / "config.yaml").to_dict()


def test_each_fold_threshold_comes_from_the_other_folds_only(run_config: dict, tmp_path: Path) -> None:
    write_cv(tmp_path / "cv", run_config)
    data = held_out(tmp_path / "cv")
    thresholds = out_of_group_thresholds(data.scores["model"], data.labels, "accuracy")
    for k in range(3):
        others = [i for i in range(3) if i != k]
        pooled = np.concatenate([data.scores["model"][i] for i in others])
        expected = choose_threshold(pooled, np.concatenate([data.labels[i] for i in others]), "accuracy").threshold
        assert thresholds[k] == expected
    moved = list(data.scores["model"])
    moved[0] = moved[0] + 100.0  # fold 0's own scores do not move its threshold, they move the others'
    again = out_of_group_thresholds(moved, data.labels, "accuracy")
    assert again[0] == thresholds[0] and again[1] != thresholds[1]
    with pytest.raises(ConfigError, match="at least 2"):
        out_of_group_thresholds(data.scores["model"][:1], data.labels[:1], "accuracy")


def test_report_pools_both_calibrations(run_config: dict, tmp_path: Path) -> None:
    write_cv(tmp_path / "cv", run_config)
    result = cv_report(tmp_path / "cv", ["recall:0.9"])
    pooled = result["pooled"]
    key = f"model@accuracy ({OUT_OF_GROUP})"
    assert {key, f"model@recall:0.9 ({OUT_OF_GROUP})", f"classical@accuracy ({OUT_OF_GROUP})"} <= set(pooled)
    assert list(pooled)[:3] == ["model@accuracy", "model@recall:0.995", key]  # each method's rows together
    data = held_out(tmp_path / "cv")
    thresholds = out_of_group_thresholds(data.scores["model"], data.labels, "accuracy")
    verdicts = np.concatenate([s > t for s, t in zip(data.scores["model"], thresholds, strict=True)])
    labels = np.concatenate(data.labels)
    assert pooled[key]["accuracy"] == pytest.approx(np.mean(verdicts == labels))
    assert result["folds"]["group2"][key]["threshold"] == thresholds[1]
    # the own thresholds (3.0) are too high for the lower-scoring defects: out-of-group catches more of them
    assert pooled[key]["recall"] > pooled["model@accuracy"]["recall"]
    everything = np.concatenate(data.scores["model"])
    assert result["out_of_group"]["model"]["accuracy"]["threshold"] == choose_threshold(everything, labels).threshold
    text = (tmp_path / "cv" / "cv.md").read_text()
    assert f"| {key} |" in text and "out-of-group acc." in text and "--from-cv" in text
    write_cv(tmp_path / "one", run_config, folds=1)
    assert "out_of_group" not in summarise(held_out(tmp_path / "one"))


def test_calibrate_from_cv_sets_the_pooled_threshold(tiny_run: Path, run_config: dict, tmp_path: Path) -> None:
    write_cv(tmp_path / "cv", run_config)
    before = {f: f.stat().st_mtime_ns for f in (tmp_path / "cv").rglob("*")}
    bundle = calibrate_from_cv(tiny_run, tmp_path / "cv", "recall:0.995")
    assert {f: f.stat().st_mtime_ns for f in (tmp_path / "cv").rglob("*")} == before  # the folds are only read
    data = held_out(tmp_path / "cv")
    expected = choose_threshold(np.concatenate(data.scores["model"]), np.concatenate(data.labels), "recall:0.995")
    assert bundle.threshold == pytest.approx(expected.threshold)
    cal = bundle.calibration
    assert cal["source"] == "cross-validation" and cal["folds"] == GROUPS and cal["patches"] == 180
    estimate = summarise(held_out(tmp_path / "cv"), ["recall:0.995"])["pooled"][f"model@recall:0.995 ({OUT_OF_GROUP})"]
    assert cal["out_of_group"]["recall"] == estimate["recall"] and cal["notes"] == []
    assert cal["cv"] == str((tmp_path / "cv").resolve())
    assert cal["val_items"] == json.loads((tiny_run / "split.json").read_text())["val"]  # evaluate's auto subset
    # trained otherwise (another schedule): calibrated, with a note; two folds of three: a note
    other = json.loads(json.dumps(run_config))
    other["train"]["epochs"] += 1
    write_cv(tmp_path / "other", other, folds=2)
    notes = calibrate_from_cv(tiny_run, tmp_path / "other").calibration["notes"]
    assert any("train.epochs" in n for n in notes) and any("2 of 3 folds" in n for n in notes)


def test_calibrate_from_cv_refuses_what_would_mislead(tiny_run: Path, run_config: dict, tmp_path: Path) -> None:
    network = json.loads(json.dumps(run_config))
    network["model"]["hidden_dim"] *= 2
    write_cv(tmp_path / "network", network)
    with pytest.raises(ConfigError, match="another network.*model.hidden_dim"):
        calibrate_from_cv(tiny_run, tmp_path / "network")
    patches = json.loads(json.dumps(run_config))
    patches["data"]["context"] += 8  # other patches: the scores of another input
    write_cv(tmp_path / "patches", patches)
    with pytest.raises(ConfigError, match="data.context"):
        calibrate_from_cv(tiny_run, tmp_path / "patches")
    write_cv(tmp_path / "gated", run_config, inference={"model.gate": 0})
    with pytest.raises(ConfigError, match="scored with"):
        calibrate_from_cv(tiny_run, tmp_path / "gated")
    assert calibrate_from_cv(tiny_run, tmp_path / "gated", inference={"model.gate": 0}).cfg.model.gate == 0
    write_cv(tmp_path / "one", run_config, folds=1)
    with pytest.raises(ConfigError, match="1 fold"):
        calibrate_from_cv(tiny_run, tmp_path / "one")
    with pytest.raises(ConfigError, match="no cv.json"):
        calibrate_from_cv(tiny_run, tmp_path)


def test_cli_calibrate_from_cv(
    tiny_run: Path, run_config: dict, synth_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    write_cv(tmp_path / "cv", run_config)
    out = tmp_path / "m.bundle"
    assert main(["calibrate", "--model", str(tiny_run), "--from-cv", str(tmp_path / "cv"), "--bundle", str(out)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["source"] == "cross-validation" and printed["patches"] == 180
    assert load_bundle(out).calibration["cv"] == str((tmp_path / "cv").resolve())
    assert main(["info", str(out)]) == 0 and "cross-validation" in capsys.readouterr().out  # where it came from
    for argv, sentence in (
        (["--from-cv", str(tmp_path / "cv"), "--data", str(synth_root)], "drop --data"),
        ([], "give --data ROOT"),
    ):
        assert main(["calibrate", "--model", str(tiny_run), "--bundle", str(tmp_path / "x.bundle"), *argv]) == 2
        assert sentence in capsys.readouterr().err
    assert not (tmp_path / "x.bundle").exists()


def test_cli_cv_report_adds_policies(run_config: dict, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    write_cv(tmp_path / "cv", run_config)
    assert main(["cv", "--out", str(tmp_path / "cv"), "--report-only", "--policy", "recall:0.9"]) == 0
    assert f"| model@recall:0.9 ({OUT_OF_GROUP}) |" in capsys.readouterr().out
    assert f"model@recall:0.9 ({OUT_OF_GROUP})" in (tmp_path / "cv" / "cv.md").read_text()
    assert main(["cv", "--out", str(tmp_path / "cv"), "--report-only", "--policy", "bogus"]) == 2
    assert "bogus" in capsys.readouterr().err
