from pathlib import Path

import numpy as np
import torch

from pcbsiam.data.deeppcb import read_deeppcb
from pcbsiam.data.images import load_gray
from pcbsiam.data.records import BoardPair
from pcbsiam.detection.learned import WindowSpec, load_detector
from pcbsiam.io import read_jsonl
from pcbsiam.models.detector import VerifierConfig
from pcbsiam.train.detector import (
    DetectorTrainConfig,
    _label_proposals,
    _rule_types_of,
    candidate_samples,
    train_detector,
)


def _gray(pair: BoardPair) -> tuple[np.ndarray, np.ndarray]:
    return load_gray(pair.tested), load_gray(pair.template)


TINY = VerifierConfig(input_size=32, hidden_dim=16)
BRIGHT = WindowSpec()  # synthetic files have dark copper, as DeepPCB


def test_proposals_take_the_type_and_box_of_the_defect_they_cover() -> None:
    truth = np.array([[10, 10, 40, 40, 2], [100, 100, 130, 120, 6]], np.float64)
    proposals = np.array([[12, 14, 30, 30], [200, 200, 220, 220], [95, 98, 120, 110], [38, 38, 60, 60]], np.float64)
    labels, targets = _label_proposals(proposals, truth, min_iou=0.1)
    assert labels.tolist() == [2, 0, 6, 0]  # the last one overlaps the first defect by IoU < 0.1, centre outside
    np.testing.assert_array_equal(targets[[0, 2]], truth[[0, 1], :4])
    np.testing.assert_array_equal(targets[1], proposals[1])


def test_a_moved_annotated_box_takes_the_rule_type_of_the_proposal_it_overlaps_most() -> None:
    boxes = np.array([[10, 10, 40, 40], [300, 300, 320, 320]], np.float64)
    proposals = np.array([[12, 12, 30, 30], [20, 20, 44, 44]], np.float64)
    assert _rule_types_of(boxes, proposals, np.array([4, 5]), 0.1).tolist() == [5, 0]  # none near the second
    assert _rule_types_of(boxes, proposals[:0], np.array([], np.int64), 0.1).tolist() == [0, 0]


def test_samples_hold_every_defect_and_training_writes_a_loadable_detector(synth_root: Path, tmp_path: Path) -> None:
    pairs = read_deeppcb(synth_root).pairs[:6]
    cfg = DetectorTrainConfig(epochs=2, batch_size=8, jitter=1)
    samples = candidate_samples(pairs, BRIGHT, TINY, cfg)
    n_defects = sum(len(p.boxes) for p in pairs)
    assert int((samples.labels > 0).sum()) >= n_defects  # the jittered windows alone give each defect once
    assert samples.tested.shape[1:] == (1, 32, 32) and samples.tested.dtype == torch.float16
    assert samples.rule_types.shape == samples.labels.shape and samples.rule_types.max() <= 6
    first = BRIGHT.proposer().detect(*_gray(pairs[0]))  # the first pair's proposals come first, with their types
    assert len(first) > 0 and samples.rule_types[: len(first)].tolist() == first.types.tolist()
    hinted = VerifierConfig(input_size=32, hidden_dim=16, rule_types=True)
    det, facts = train_detector(pairs, tmp_path / "run", hinted, BRIGHT, cfg)
    records = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    assert [r["epoch"] for r in records] == [1, 2] and all(np.isfinite(r["loss"]) for r in records)
    assert facts["train_boards"] == 6 and facts["windows"] == len(samples)
    loaded = load_detector(tmp_path / "run" / "detector.pt")
    assert loaded.net.cfg.rule_types
    t, r = _gray(pairs[0])
    np.testing.assert_allclose(det.detect(t, r).as_array(), loaded.detect(t, r).as_array(), atol=1e-5)
