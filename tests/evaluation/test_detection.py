"""The DeepPCB detection benchmark against hand-worked cases and a plain loop of its rules."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import numpy as np
import pytest

from pcbsiam.data.deeppcb import write_detections
from pcbsiam.data.defects import DEFECT_TYPES
from pcbsiam.data.records import BoardPair
from pcbsiam.errors import DataError
from pcbsiam.evaluation.detection import (
    box_iou,
    evaluate_detections,
    evaluate_folder,
    match_image,
    render_report,
)

BOX = [0, 0, 10, 10]


def gt(*rows: list) -> np.ndarray:
    return np.array(rows, dtype=np.int64).reshape(-1, 5)


def det(*rows: list) -> np.ndarray:
    return np.array(rows, dtype=np.float64).reshape(-1, 6)


def test_iou_exactly_at_the_threshold_is_no_match() -> None:
    g = gt([0, 0, 100, 1, 1])
    d = det([0, 0, 33, 1, 0.9, 1])
    assert box_iou(g, d)[0, 0] == 0.33  # the case really sits on the threshold
    m = match_image(g, d)
    assert m.matched_gt.tolist() == [-1] and m.matched_det.tolist() == [-1] and not m.correct.any()


def test_iou_just_above_the_threshold_matches() -> None:
    m = match_image(gt([0, 0, 1000, 1, 1]), det([0, 0, 331, 1, 0.9, 1]))
    assert m.matched_gt.tolist() == [0] and m.correct.tolist() == [True] and m.found.tolist() == [True]


def test_iou_uses_the_plain_area_formula() -> None:
    # areas 100 and 100, intersection 5 x 10 = 50: IoU 50 / 150
    assert box_iou(np.array([[0, 0, 10, 10]]), np.array([[5, 0, 15, 10]]))[0, 0] == pytest.approx(1 / 3)
    assert box_iou(np.array([[0, 0, 10, 10]]), np.array([[10, 0, 20, 10]]))[0, 0] == 0.0  # touching


def test_a_wrong_type_match_uses_up_both_boxes() -> None:
    m = match_image(gt([*BOX, 1]), det([*BOX, 0.9, 2], [*BOX, 0.8, 1]))
    assert m.matched_gt.tolist() == [0, -1]  # the correctly typed second detection is left over
    assert m.matched_det.tolist() == [0]
    assert m.correct.tolist() == [False, False] and m.found.tolist() == [False]


def test_the_first_ground_truth_in_file_order_takes_a_shared_detection() -> None:
    # the detection fits the second box better (IoU 1 vs 100/144), but the first one is visited first
    m = match_image(gt([0, 0, 10, 10, 1], [0, 0, 12, 12, 1]), det([0, 0, 12, 12, 0.9, 1]))
    assert m.matched_det.tolist() == [0, -1] and m.found.tolist() == [True, False]


def test_greedy_file_order_is_not_an_optimal_assignment() -> None:
    # gt0 could use det0 or det1, gt1 only det0; gt0 takes det0 and gt1 goes unmatched
    g = gt([0, 0, 10, 10, 1], [8, 0, 18, 10, 1])
    d = det([4, 0, 14, 10, 0.5, 1], [0, 0, 10, 10, 0.5, 1])
    assert box_iou(g, d)[1, 1] <= 0.33 < box_iou(g, d)[1, 0]
    m = match_image(g, d)
    assert m.matched_det.tolist() == [0, -1] and m.matched_gt.tolist() == [0, -1]


def test_for_a_ground_truth_the_first_detection_in_file_order_wins() -> None:
    # the second detection has the higher IoU and the higher confidence, and loses
    m = match_image(gt([*BOX, 3]), det([0, 0, 12, 12, 0.2, 3], [*BOX, 0.99, 3]))
    assert m.matched_det.tolist() == [0] and m.correct.tolist() == [True, False]


def plain_match(g: np.ndarray, d: np.ndarray) -> tuple[list[int], list[bool]]:
    """The protocol's loop, written out literally."""

    def iou(a: np.ndarray, b: np.ndarray) -> float:
        w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
        h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
        inter = w * h
        return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)

    gt_used, det_of = [False] * len(g), [-1] * len(d)
    correct = [False] * len(d)
    for i in range(len(g)):
        for j in range(len(d)):
            if not gt_used[i] and det_of[j] < 0 and iou(g[i], d[j]) > 0.33:
                gt_used[i], det_of[j] = True, i
                correct[j] = int(g[i][4]) == int(d[j][5])
    return det_of, correct


def test_matching_agrees_with_the_literal_loop() -> None:
    rng = np.random.default_rng(0)
    for _ in range(200):
        n_g, n_d = rng.integers(0, 5, 2)
        xy = rng.integers(0, 12, (n_g + n_d, 2))
        wh = rng.integers(1, 8, (n_g + n_d, 2))
        boxes = np.concatenate([xy, xy + wh], axis=1)
        g = np.concatenate([boxes[:n_g], rng.integers(1, 3, (n_g, 1))], axis=1)
        d = np.concatenate([boxes[n_g:], rng.random((n_d, 1)), rng.integers(1, 3, (n_d, 1))], axis=1)
        m = match_image(g, d)
        det_of, correct = plain_match(g, d)
        assert m.matched_gt.tolist() == det_of and m.correct.tolist() == correct


def two_images() -> list[tuple[str, np.ndarray, np.ndarray]]:
    # ranks by confidence: 0.9 correct, 0.7 wrong type, 0.5 correct; 3 ground-truth boxes
    a = ("a", gt([*BOX, 1], [20, 20, 30, 30, 2]), det([*BOX, 0.9, 1], [20, 20, 30, 30, 0.5, 2]))
    b = ("b", gt([*BOX, 3]), det([*BOX, 0.7, 4]))
    return [a, b]


def test_ap_precision_recall_f_on_two_images() -> None:
    r = evaluate_detections(two_images())
    assert (r.n_images, r.n_gt, r.n_det, r.n_correct) == (2, 3, 3, 2)
    assert r.ap == pytest.approx((1 / 1 + 2 / 3) / 3)
    assert r.precision == pytest.approx(2 / 3) and r.recall == pytest.approx(2 / 3)
    assert r.f_score == pytest.approx(2 / 3)


def test_ap_counts_false_detections_and_misses() -> None:
    # ranks: 0.8 false (no gt), 0.6 correct; one of 2 defects never found
    items = [("a", gt([*BOX, 1], [50, 50, 60, 60, 2]), det([30, 30, 40, 40, 0.8, 1], [*BOX, 0.6, 1]))]
    r = evaluate_detections(items)
    assert r.ap == pytest.approx((1 / 2) / 2)
    assert r.precision == 0.5 and r.recall == 0.5


def test_equal_confidences_keep_the_order_given() -> None:
    right = ("right", gt([*BOX, 1]), det([*BOX, 0.5, 1]))
    wrong = ("wrong", gt([*BOX, 1]), det([*BOX, 0.5, 2]))
    assert evaluate_detections([right, wrong]).ap == pytest.approx((1 / 1) / 2)
    assert evaluate_detections([wrong, right]).ap == pytest.approx((1 / 2) / 2)


def test_no_detections_give_zero_scores() -> None:
    r = evaluate_detections([("a", gt([*BOX, 1]), np.zeros((0, 6)))])
    assert (r.precision, r.recall, r.f_score, r.ap) == (0.0, 0.0, 0.0, 0.0)
    assert r.missed.tolist() == [1, 0, 0, 0, 0, 0]
    empty = evaluate_detections([("a", np.zeros((0, 5)), [])])
    assert (empty.n_images, empty.n_gt, empty.n_det, empty.f_score, empty.ap) == (1, 0, 0, 0.0, 0.0)


def test_per_type_figures_and_confusion_matrix() -> None:
    g = gt([0, 0, 10, 10, 1], [20, 0, 30, 10, 1], [40, 0, 50, 10, 2], [60, 0, 70, 10, 3])
    d = det(
        [0, 0, 10, 10, 0.9, 1],  # open found
        [20, 0, 30, 10, 0.8, 2],  # open taken for a short
        [60, 0, 70, 10, 0.7, 3],  # mousebite found
        [80, 80, 90, 90, 0.6, 5],  # false spurious copper
    )  # the short (gt 2) is missed
    r = evaluate_detections([("a", g, d)])
    expected = np.zeros((6, 6), int)
    expected[0, 0] = expected[0, 1] = expected[2, 2] = 1
    np.testing.assert_array_equal(r.confusion, expected)
    assert r.missed.tolist() == [0, 1, 0, 0, 0, 0]
    assert r.false.tolist() == [0, 0, 0, 0, 1, 0]
    t = r.per_type()
    assert list(t) == list(DEFECT_TYPES.values())
    assert (t["open"]["recall"], t["open"]["precision"], t["open"]["missed_share"]) == (0.5, 1.0, 0.0)
    assert (t["short"]["recall"], t["short"]["precision"], t["short"]["missed_share"]) == (0.0, 0.0, 1.0)
    assert (t["mousebite"]["recall"], t["mousebite"]["precision"]) == (1.0, 1.0)
    assert t["spurious_copper"] == {
        "n_gt": 0,
        "n_det": 1,
        "correct": 0,
        "recall": None,
        "precision": 0.0,
        "missed": 0,
        "missed_share": None,
        "false": 1,
    }
    assert t["spur"]["recall"] is None and t["spur"]["precision"] is None
    d_json = json.loads(json.dumps(r.to_dict()))
    assert d_json["confusion"]["open"]["short"] == 1 and d_json["n_correct"] == 2
    assert set(d_json["confusion"]) == set(DEFECT_TYPES.values())
    text = render_report(r)
    assert "| open | 2 | 50.00 | 1 | 100.00 | 0.00 | 0 |" in text
    assert "| open | 1 | 1 | 0 | 0 | 0 | 0 | 0 |" in text
    assert "| short | 0 | 0 | 0 | 0 | 0 | 0 | 1 |" in text


@pytest.mark.parametrize(
    "g, d, words",
    [
        (np.zeros((1, 4)), np.zeros((0, 6)), "(N, 5)"),
        (gt([*BOX, 0]), np.zeros((0, 6)), "type 0"),
        (gt([*BOX, 1]), det([5, 0, 5, 10, 0.5, 1]), "empty box"),
        (gt([*BOX, 1]), det([*BOX, np.nan, 1]), "non-finite"),
    ],
)
def test_bad_boxes_are_refused(g: np.ndarray, d: np.ndarray, words: str) -> None:
    with pytest.raises(ValueError, match=r"Image 'x'.*" + re.escape(words)):
        evaluate_detections([("x", g, d)])


def test_an_image_given_twice_is_refused() -> None:
    item = ("a", gt([*BOX, 1]), det([*BOX, 0.5, 1]))
    with pytest.raises(ValueError, match="given twice"):
        evaluate_detections([item, item])


def pair(name: str, boxes: np.ndarray) -> BoardPair:
    return BoardPair(name, "group0", Path(f"{name}_test.jpg"), Path(f"{name}_temp.jpg"), boxes)


def test_evaluate_folder(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    a, b = two_images()
    write_detections(tmp_path, "a", a[2])
    write_detections(tmp_path, "stray", det([*BOX, 0.5, 1]))
    (tmp_path / "notes.md").write_text("not a result file")
    pairs = [pair("a", a[1]), pair("b", b[1])]  # b has no result file: its defect is missed
    with caplog.at_level(logging.WARNING, logger="pcbsiam.evaluation.detection"):
        r = evaluate_folder(tmp_path, pairs)
    assert r.n_ignored_files == 1 and "stray.txt" in caplog.text
    assert (r.n_images, r.n_gt, r.n_det, r.n_correct) == (2, 3, 2, 2)
    assert r.missed.tolist() == [0, 0, 1, 0, 0, 0]
    assert r.ap == pytest.approx((1 + 1) / 3) and r.precision == 1.0


def test_evaluate_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="results folder not found"):
        evaluate_folder(tmp_path / "missing", [])
    (tmp_path / "a.txt").write_text("0,0,10,10,0.5,open\n0,0,10,10,half,open\n")
    with pytest.raises(DataError, match="line 2"):
        evaluate_folder(tmp_path, [pair("a", gt([*BOX, 1]))])
