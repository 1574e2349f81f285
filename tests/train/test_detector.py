from pathlib import Path

import numpy as np
import torch

from pcbsiam.data.deeppcb import read_deeppcb
from pcbsiam.detection.learned import WindowSpec, load_detector
from pcbsiam.io import read_jsonl
from pcbsiam.models.detector import VerifierConfig
from pcbsiam.train.detector import DetectorTrainConfig, _label_proposals, candidate_samples, train_detector

TINY = VerifierConfig(input_size=32, hidden_dim=16)
BRIGHT = WindowSpec()  # synthetic files have dark copper, as DeepPCB


def test_proposals_take_the_type_and_box_of_the_defect_they_cover() -> None:
    truth = np.array([[10, 10, 40, 40, 2], [100, 100, 130, 120, 6]], np.float64)
    proposals = np.array([[12, 14, 30, 30], [200, 200, 220, 220], [95, 98, 120, 110], [38, 38, 60, 60]], np.float64)
    labels, targets = _label_proposals(proposals, truth, min_iou=0.1)
    assert labels.tolist() == [2, 0, 6, 0]  # the last one overlaps the first defect by IoU < 0.1, centre outside
    np.testing.assert_array_equal(targets[[0, 2]], truth[[0, 1], :4])
    np.testing.assert_array_equal(targets[1], proposals[1])


def test_samples_hold_every_defect_and_training_writes_a_loadable_detector(synth_root: Path, tmp_path: Path) -> None:
    pairs = read_deeppcb(synth_root).pairs[:6]
    cfg = DetectorTrainConfig(epochs=2, batch_size=8, jitter=1)
    samples = candidate_samples(pairs, BRIGHT, TINY, cfg)
    n_defects = sum(len(p.boxes) for p in pairs)
    assert int((samples.labels > 0).sum()) >= n_defects  # the jittered windows alone give each defect once
    assert samples.tested.shape[1:] == (1, 32, 32) and samples.tested.dtype == torch.float16
    det, facts = train_detector(pairs, tmp_path / "run", TINY, BRIGHT, cfg)
    records = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    assert [r["epoch"] for r in records] == [1, 2] and all(np.isfinite(r["loss"]) for r in records)
    assert facts["train_boards"] == 6 and facts["windows"] == len(samples)
    loaded = load_detector(tmp_path / "run" / "detector.pt")
    from pcbsiam.data.images import load_gray

    t, r = load_gray(pairs[0].tested), load_gray(pairs[0].template)
    np.testing.assert_allclose(det.detect(t, r).as_array(), loaded.detect(t, r).as_array(), atol=1e-5)
