"""Leave-one-group-out cross-validation: folds train, score, resume and pool."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pcbsiam.config import load_config
from pcbsiam.errors import ConfigError
from pcbsiam.evaluation.calibration import choose_threshold
from pcbsiam.experiment.cv import cv_report, fold_dir, run_cv
from tests.conftest import TINY_TRAIN

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_two_folds_train_score_pool_and_resume(synth_root: Path, tmp_path: Path) -> None:
    from pcbsiam.train.fit import fit

    cfg = load_config("tiny", [*TINY_TRAIN, f"data.root={synth_root}"])
    calls: list[str] = []

    def counting_fit(c, out, resume=False):  # noqa: ANN001, ANN202
        calls.append(c.data.holdout_groups[0])
        return fit(c, out, resume=resume)

    groups = ["group12000", "group13000"]
    result = run_cv(cfg, tmp_path / "cv", "tiny", only=groups, calib_patches=None, fit=counting_fit)
    assert calls == groups and result["done"] == 2 and result["of"] == 4
    for g in groups:
        split = json.loads((fold_dir(tmp_path / "cv", g) / "split.json").read_text())
        held = {n for n in split["val"]}
        assert held and not held & set(split["train"])  # the held-out group's boards are never trained on
        scores = np.load(fold_dir(tmp_path / "cv", g) / "scores.npz")
        assert len(scores["model"]) == len(scores["classical"]) == len(scores["labels"]) > 0
        # the calibration scores are kept: the recorded thresholds follow from them
        rec = json.loads((fold_dir(tmp_path / "cv", g) / "fold.json").read_text())
        assert len(scores["calib_model"]) == len(scores["calib_classical"]) == len(scores["calib_labels"]) > 0
        again = choose_threshold(scores["calib_model"], scores["calib_labels"], "accuracy").threshold
        assert again == rec["thresholds"]["model"]["accuracy"]
    pooled = result["pooled"]
    own = {f"{m}@{p}" for m in ("model", "classical") for p in ("accuracy", "recall:0.995")}
    assert set(pooled) == own | {f"{k} (out-of-group)" for k in own}  # two folds: each calibrates the other
    n = sum(f["patches"] for f in result["folds"].values())
    assert pooled["model@accuracy"]["n"] == n
    assert pooled["classical@recall:0.995"]["recall"] >= pooled["classical@accuracy"]["recall"]
    assert "| model@accuracy |" in (tmp_path / "cv" / "cv.md").read_text()
    # repeating skips finished folds; another config in the same folder is refused
    run_cv(cfg, tmp_path / "cv", "tiny", only=groups, calib_patches=None, fit=counting_fit)
    assert calls == groups
    # another way of applying the networks (the tile gate) scores the folds again without training
    gated = load_config("tiny", [*TINY_TRAIN, f"data.root={synth_root}", "model.gate=0"])
    before = {g: np.load(fold_dir(tmp_path / "cv", g) / "scores.npz")["model"] for g in groups}
    run_cv(gated, tmp_path / "cv", "tiny", only=groups, calib_patches=None, fit=counting_fit)
    assert calls == groups
    for g in groups:
        record = json.loads((fold_dir(tmp_path / "cv", g) / "fold.json").read_text())
        assert record["inference"] == {"model.gate": 0, "model.gate_margin": 4, "model.views": 1}
        after = np.load(fold_dir(tmp_path / "cv", g) / "scores.npz")["model"]
        skipped = after == 0.0  # the paper mode's null score: a distance of 0
        assert np.allclose(after[~skipped], before[g][~skipped], atol=1e-5) and (before[g][skipped] > 0).any()
    # a record written before an inference setting existed took its default: not scored again
    first = fold_dir(tmp_path / "cv", groups[0]) / "fold.json"
    old = json.loads(first.read_text())
    del old["inference"]["model.views"]
    first.write_text(json.dumps(old))
    run_cv(gated, tmp_path / "cv", "tiny", only=groups, calib_patches=None, fit=counting_fit)
    assert "model.views" not in json.loads(first.read_text())["inference"]
    other = load_config("tiny", [*TINY_TRAIN, f"data.root={synth_root}", "train.seed=5"])
    with pytest.raises(ConfigError, match="another config"):
        run_cv(other, tmp_path / "cv", "tiny", only=groups, fit=counting_fit)
    assert cv_report(tmp_path / "cv")["done"] == 2


def test_bad_requests_are_sentences(synth_root: Path, tmp_path: Path) -> None:
    cfg = load_config("tiny", [*TINY_TRAIN, f"data.root={synth_root}"])
    with pytest.raises(ConfigError, match="unknown group"):
        run_cv(cfg, tmp_path / "cv", "tiny", only=["group99"])
    held = load_config("tiny", [*TINY_TRAIN, f"data.root={synth_root}", "data.holdout_groups=[group13000]"])
    with pytest.raises(ConfigError, match="holdout_groups"):
        run_cv(held, tmp_path / "cv", "tiny")
