"""The learned detector beside a cross-validation's tile model: patch scores from boxes, folds, pooling, resume."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pcbsiam.data.protocol import label_patch, tile_grid
from pcbsiam.data.records import BoardPair
from pcbsiam.data.sources import read_boards
from pcbsiam.errors import ConfigError, DataError
from pcbsiam.evaluation.detection import evaluate_folder
from pcbsiam.experiment.cv import fold_dir
from pcbsiam.experiment.cv_detector import (
    DetectorFoldSettings,
    detector_patch_scores,
    run_cv_detector,
    summarise_detector,
)
from tests.conftest import run_cli

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_a_patch_takes_the_detections_with_half_their_box_inside() -> None:
    # the 2nd box: 12 of its 20 px of width in patch (128, 128) (defective), 8 in patch (128, 0) (left out)
    boxes = np.array([[10, 10, 40, 40, 3], [120, 200, 140, 240, 1]], np.int64)
    pair = BoardPair("b", "g", Path("t"), Path("r"), boxes)
    det = np.array(
        [
            [12, 12, 38, 38, 0.9, 3],  # all inside patch (0, 0)
            [100, 10, 150, 30, 0.7, 2],  # 28 of 50 px wide inside patch (0, 0): counts there, not in (0, 128)
            [200, 200, 250, 250, 0.6, 4],  # inside patch (128, 128): its score, whatever the type
        ]
    )
    scores, labels = detector_patch_scores([pair], [det], [(256, 256)])
    kept = [(y, x) for y, x, h, w in tile_grid(256, 256, 128).tolist() if label_patch(boxes, y, x, h, w)[0] >= 0]
    assert kept == [(0, 0), (0, 128), (128, 128)]
    np.testing.assert_allclose(scores, [0.9, 0.0, 0.6])
    assert labels.tolist() == [1, 0, 1]
    empty, _ = detector_patch_scores([pair], [np.zeros((0, 6))], [(256, 256)])
    assert empty.tolist() == [0.0, 0.0, 0.0]


def _fake_cv(out: Path, root: Path, groups: list[str]) -> None:
    """A cross-validation folder whose folds hold made-up tile scores: the defective patches at 1 except the first
    one of each fold (missed), the clean ones at -1."""
    boards = read_boards(root).pairs
    every = sorted({p.group for p in boards})
    request = {"config": {"data": {"root": str(root), "split": "trainval.txt"}}, "groups": every}
    (out / "cv.json").parent.mkdir(parents=True, exist_ok=True)
    (out / "cv.json").write_text(json.dumps(request | {"policies": ["accuracy"], "config_name": "fake"}))
    for g in groups:
        labels, defect = [], []
        for p in (p for p in boards if p.group == g):
            for y, x, h, w in tile_grid(256, 256, 128).tolist():
                label, kind = label_patch(p.boxes, y, x, h, w)
                if label >= 0:
                    labels.append(label)
                    defect.append(kind)
        labels = np.asarray(labels)
        model = np.where(labels == 1, 1.0, -1.0)
        model[np.flatnonzero(labels == 1)[0]] = -1.0
        fold = fold_dir(out, g)
        fold.mkdir(parents=True)
        np.savez(fold / "scores.npz", model=model, classical=model, labels=labels, defect=np.asarray(defect))
        record = {"patches": len(labels), "defective": int(labels.sum()), "train_seconds": 1.0}
        (fold / "fold.json").write_text(json.dumps(record | {"thresholds": {"model": {"accuracy": 0.0}}}))


def test_folds_train_detect_pool_and_resume(synth_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "cv"
    groups = sorted({p.group for p in read_boards(synth_root).pairs})[:2]
    _fake_cv(out, synth_root, groups)
    settings = DetectorFoldSettings(epochs=1, views=1, fine_band=0)
    seen: list[str] = []

    def progress(group: str, boards: int):  # noqa: ANN202
        seen.append(group)
        return lambda n: None

    result = run_cv_detector(out, settings=settings, progress=progress)
    assert seen == groups and result["done"] == 2 and result["of"] == 4
    for g in groups:
        fold = fold_dir(out, g)
        assert (fold / "detector" / "detector.pt").is_file()
        names = sorted(p.stem for p in (fold / "detections").glob("*.txt"))
        assert names == sorted(p.name for p in read_boards(synth_root).pairs if p.group == g)
        scores = np.load(fold / "detector.npz")["detector"]
        assert len(scores) == len(np.load(fold / "scores.npz")["labels"]) and ((scores == 0) | (scores >= 0.5)).all()
        record = json.loads((fold / "detector.json").read_text())
        assert record["settings"]["views"] == 1 and record["boards"] == len(names)
    pooled = result["pooled"]
    tile, either = pooled["tile model"], pooled["either"]
    assert tile["recall"] < 1.0  # the first defective patch of each fold is missed by the made-up tile scores
    assert either["recall"] >= max(tile["recall"], pooled["detector"]["recall"])
    assert either["false_alarm_rate"] >= tile["false_alarm_rate"]
    strict = pooled["either, detections >= 0.99"]
    assert tile["recall"] <= strict["recall"] <= either["recall"]
    assert "| either |" in (out / "detector.md").read_text()
    assert json.loads((out / "detector.json").read_text())["done"] == 2
    # the detections as boxes: each fold by the protocol's own scoring of its folder, pooled = the folds' counts
    boxes = result["boxes"]
    assert list(boxes["folds"]) == groups
    for g in groups:
        held = [p for p in read_boards(synth_root).pairs if p.group == g]
        report = evaluate_folder(fold_dir(out, g) / "detections", held)
        assert boxes["folds"][g]["f_score"] == pytest.approx(report.f_score)
        assert boxes["folds"][g]["ap"] == pytest.approx(report.ap)
    for key in ("n_images", "n_gt", "n_det", "n_correct"):
        assert boxes["pooled"][key] == sum(f[key] for f in boxes["folds"].values())
    assert "| **pooled** |" in (out / "detector.md").read_text()
    # repeating skips finished folds; the report alone reads the same figures
    assert run_cv_detector(out, settings=settings, progress=progress)["pooled"] == pooled and seen == groups
    assert summarise_detector(out)["pooled"] == pooled
    (out / "detector.md").unlink()
    code, printed, _ = run_cli(capsys, "cv-detector", "--out", out, "--report-only")
    assert code == 0 and "| either |" in printed and (out / "detector.md").read_text() in printed
    code, _, err = run_cli(capsys, "cv-detector", "--out", tmp_path / "none", "--report-only")
    assert code == 2 and "holds no cross-validation" in err
    with pytest.raises(ConfigError, match="no finished fold"):
        run_cv_detector(out, only=["group99999"], settings=settings)
    # a fold whose patches are not the boards' (another data set) is refused
    bad = fold_dir(out, groups[0])
    (bad / "detector.json").unlink()
    with np.load(bad / "scores.npz") as z:
        data = dict(z)
    data["labels"] = data["labels"][::-1]
    np.savez(bad / "scores.npz", **data)
    with pytest.raises(DataError, match="differ from the fold's scores"):
        run_cv_detector(out, only=[groups[0]], settings=settings)
