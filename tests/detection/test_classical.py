"""Tests of pcbsiam.detection.classical: each defect type injected by hand, registration, input checks, DeepPCB."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pcbsiam.data.binarize import otsu_threshold
from pcbsiam.data.deeppcb import read_deeppcb
from pcbsiam.data.images import load_gray
from pcbsiam.data.registration import Shift, shift_image
from pcbsiam.detection.classical import ClassicalDetector
from pcbsiam.detection.learned import WindowSpec
from pcbsiam.detection.records import Detections
from pcbsiam.errors import RegistrationError

COPPER, BACKGROUND = 255, 0

#: (rows, cols) of copper drawn on the template: two 10 px tracks and a wide pad.
TRACK_A = np.s_[20:30, 6:90]
TRACK_B = np.s_[44:54, 6:90]
PAD = np.s_[66:90, 30:66]

#: type code -> (region painted on the tested board, value painted).
DEFECTS = {
    1: (np.s_[20:30, 40:46], BACKGROUND),  # open: a gap cutting track A
    2: (np.s_[30:44, 60:66], COPPER),  # short: a bridge between the tracks
    3: (np.s_[48:54, 30:36], BACKGROUND),  # mousebite: a bite out of track B's lower edge
    4: (np.s_[12:20, 50:55], COPPER),  # spur: a stub on track A's upper edge
    5: (np.s_[70:78, 76:84], COPPER),  # spurious copper: an isolated blob
    6: (np.s_[74:80, 44:50], BACKGROUND),  # pin-hole: a hole inside the pad
}


def template_board() -> np.ndarray:
    """(96, 96) uint8 defect-free board, copper 255 on 0."""
    img = np.full((96, 96), BACKGROUND, np.uint8)
    for region in (TRACK_A, TRACK_B, PAD):
        img[region] = COPPER
    return img


def with_defect(code: int) -> np.ndarray:
    """(96, 96) uint8 tested board carrying the defect ``code``."""
    img = template_board()
    region, value = DEFECTS[code]
    img[region] = value
    return img


def overlaps(box: np.ndarray, region: tuple[slice, slice], dy: int = 0, dx: int = 0) -> bool:
    """Whether an ``x1 y1 x2 y2`` box meets a (rows, cols) region moved by ``(dy, dx)``."""
    rows, cols = region
    return box[0] < cols.stop + dx and box[2] > cols.start + dx and box[1] < rows.stop + dy and box[3] > rows.start + dy


@pytest.fixture(scope="module")
def detector() -> ClassicalDetector:
    return ClassicalDetector(copper="bright")


@pytest.mark.parametrize("code", sorted(DEFECTS))
def test_each_injected_defect_gives_one_box_of_its_type(detector: ClassicalDetector, code: int) -> None:
    found = detector.detect(with_defect(code), template_board())
    assert len(found) == 1, found.as_array()
    assert overlaps(found.boxes[0], DEFECTS[code][0])
    assert found.types[0] == code
    assert 0.0 < found.scores[0] <= 1.0
    assert (found.shift.dy, found.shift.dx) == (0, 0)


@pytest.mark.parametrize("code", sorted(DEFECTS))
def test_a_shifted_tested_board_gives_the_same_result(detector: ClassicalDetector, code: int) -> None:
    tested = shift_image(with_defect(code), 3, -3, fill=BACKGROUND)
    found = detector.detect(tested, template_board())
    assert (found.shift.dy, found.shift.dx) == (3, -3)
    assert len(found) == 1, found.as_array()
    assert overlaps(found.boxes[0], DEFECTS[code][0], dy=3, dx=-3)
    assert found.types[0] == code


def test_all_defects_on_one_board(detector: ClassicalDetector) -> None:
    tested = template_board()
    for region, value in DEFECTS.values():
        tested[region] = value
    found = detector.detect(tested, template_board())
    assert sorted(found.types.tolist()) == sorted(DEFECTS)
    for box, code in zip(found.boxes, found.types, strict=True):
        assert overlaps(box, DEFECTS[int(code)][0])


def test_clean_pairs_give_no_detection(detector: ClassicalDetector) -> None:
    board = template_board()
    assert len(detector.detect(board, board)) == 0
    assert len(detector.detect(shift_image(board, -3, 3, fill=BACKGROUND), board)) == 0


def test_a_vanished_stretch_of_a_track_thinner_than_the_band_is_an_open() -> None:
    template = template_board()
    template[36:39, 6:90] = COPPER  # a 3 px track: the band's erosion of the template leaves nothing of it
    tested = template.copy()
    tested[36:39, 30:60] = BACKGROUND  # 30 px of it gone
    found = ClassicalDetector(copper="bright", vanished_tracks=True).detect(tested, template)
    assert len(found) == 1 and found.types.tolist() == [1] and overlaps(found.boxes[0], np.s_[36:39, 30:60])
    assert len(ClassicalDetector(copper="bright").detect(tested, template)) == 0  # off by default: blind to it
    assert len(ClassicalDetector(copper="bright", vanished_tracks=True).detect(template, template)) == 0
    assert WindowSpec(candidates=()).proposer().vanished_tracks  # the learned detector's candidates see it
    assert not WindowSpec(candidates=(("vanished_tracks", False),)).proposer().vanished_tracks


def test_a_filled_stretch_of_a_gap_narrower_than_the_band_is_a_short() -> None:
    template = template_board()
    template[30:44, 6:90] = COPPER  # the tracks merged into one slab...
    template[36:39, 6:90] = BACKGROUND  # ...split by a 3 px gap: the band's dilation of the template covers it
    tested = template.copy()
    tested[36:39, 30:60] = COPPER  # 30 px of it filled: the two halves joined
    found = ClassicalDetector(copper="bright", filled_gaps=True).detect(tested, template)
    assert len(found) == 1 and found.types.tolist() == [2] and overlaps(found.boxes[0], np.s_[36:39, 30:60])
    assert len(ClassicalDetector(copper="bright").detect(tested, template)) == 0  # off by default: blind to it
    assert len(ClassicalDetector(copper="bright", filled_gaps=True).detect(template, template)) == 0
    wide = with_defect(2)  # a short the band sees is proposed once, not again as a filled gap
    assert len(ClassicalDetector(copper="bright", filled_gaps=True).detect(wide, template_board())) == 1


def test_a_bite_shallower_than_the_band_is_proposed_by_the_finer_band() -> None:
    tested = template_board()
    tested[87:90, 40:48] = BACKGROUND  # 3 px deep out of the pad's lower edge: 1 px of it lies below the band
    loose = ClassicalDetector(copper="bright", min_pixels=4, open_size=2)  # as the learned detector's candidates
    assert len(loose.detect(tested, template_board())) == 0  # what the 2 px band keeps, the opening drops
    found = ClassicalDetector(copper="bright", min_pixels=4, open_size=2, fine_k=1).detect(tested, template_board())
    assert found.types.tolist() == [3] and overlaps(found.boxes[0], np.s_[87:90, 40:48])
    assert len(ClassicalDetector(copper="bright", fine_k=1).detect(template_board(), template_board())) == 0
    deep = with_defect(3)  # a bite the band sees is proposed once, not again by the finer band
    assert len(ClassicalDetector(copper="bright", fine_k=1).detect(deep, template_board())) == 1
    with pytest.raises(ValueError, match="fine_k must be below"):
        ClassicalDetector(fine_k=2)


def test_dark_copper_is_the_default_polarity() -> None:
    found = ClassicalDetector().detect(255 - with_defect(1), 255 - template_board())
    assert found.types.tolist() == [1]
    assert len(ClassicalDetector(copper="bright").detect(255 - template_board(), 255 - template_board())) == 0


def test_boxes_are_padded_and_clipped() -> None:
    found = ClassicalDetector(copper="bright", pad=0).detect(with_defect(5), template_board())
    assert found.boxes[0].tolist() == [76.0, 70.0, 84.0, 78.0]  # the blob is 8x8 and > k px from any copper
    found = ClassicalDetector(copper="bright", pad=30).detect(with_defect(5), template_board())
    assert found.boxes[0].tolist() == [46.0, 40.0, 96.0, 96.0]
    found = ClassicalDetector(copper="bright", pad=0, min_side=12).detect(with_defect(5), template_board())
    assert found.boxes[0].tolist() == [74.0, 68.0, 86.0, 80.0]


def test_unregistered_pairs_fall_back_or_raise() -> None:
    blank = np.zeros((96, 96), np.uint8)
    found = ClassicalDetector(copper="bright").detect(template_board(), blank)
    assert found.shift == Shift(0, 0, 0.0)
    assert set(found.types.tolist()) == {5}  # every copper area is spurious against a blank template
    with pytest.raises(RegistrationError):
        ClassicalDetector(copper="bright", allow_unregistered=False).detect(template_board(), blank)


@pytest.mark.parametrize(
    ("tested", "template"),
    [
        (np.zeros((96, 96), np.uint8), np.zeros((96, 95), np.uint8)),
        (np.zeros((96, 96, 3), np.uint8), np.zeros((96, 96, 3), np.uint8)),
        (np.zeros((96, 96), np.float32), np.zeros((96, 96), np.float32)),
    ],
)
def test_bad_inputs_raise_a_sentence(tested: np.ndarray, template: np.ndarray) -> None:
    with pytest.raises(ValueError, match=r"must .*\.$"):
        ClassicalDetector().detect(tested, template)


def test_bad_settings_raise() -> None:
    with pytest.raises(ValueError, match="copper"):
        ClassicalDetector(copper="white")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="pad"):
        ClassicalDetector(pad=-1)


def test_otsu_splits_two_levels_halfway() -> None:
    assert otsu_threshold(template_board()) == 127
    assert otsu_threshold(np.full((8, 8), 40, np.uint8)) == 127


def test_detections_as_array_sorts_by_score() -> None:
    found = Detections(
        boxes=np.array([[0, 0, 4, 4], [1, 1, 5, 5], [2, 2, 6, 6]]),
        scores=np.array([0.2, 0.9, 0.5]),
        types=np.array([3, 1, 6]),
        shift=Shift(0, 0, 1.0),
    )
    rows = found.as_array()
    assert rows.shape == (3, 6)
    assert rows[:, 4].tolist() == [0.9, 0.5, 0.2]
    assert rows[:, 5].tolist() == [1.0, 6.0, 3.0]
    assert rows[0, :4].tolist() == [1.0, 1.0, 5.0, 5.0]
    assert Detections.empty(Shift(0, 0, 1.0)).as_array().shape == (0, 6)
    with pytest.raises(ValueError, match="as many"):
        Detections(np.zeros((2, 4)), np.zeros(1), np.zeros(2), Shift(0, 0, 1.0))


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, M) IoU of (N, 4) and (M, 4) ``x1 y1 x2 y2`` boxes."""
    lo = np.maximum(a[:, None, :2], b[None, :, :2])
    hi = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(hi - lo, 0, None), axis=2)
    area_a, area_b = np.prod(a[:, 2:] - a[:, :2], axis=1), np.prod(b[:, 2:] - b[:, :2], axis=1)
    return inter / (area_a[:, None] + area_b[None, :] - inter)


def test_real_deeppcb_boards_are_mostly_found(shared_deeppcb: Path) -> None:
    pairs = read_deeppcb(shared_deeppcb, "trainval.txt").pairs[:2]
    detector = ClassicalDetector()
    matched = total = 0
    for pair in pairs:
        found = detector.detect(load_gray(pair.tested), load_gray(pair.template))
        iou = box_iou(pair.boxes[:, :4].astype(np.float64), found.boxes)
        matched += int(np.count_nonzero(iou.max(axis=1, initial=0.0) > 0.33))
        total += len(pair.boxes)
    assert total > 0 and matched >= 0.8 * total, f"{matched} of {total} annotated defects found"


def test_a_spur_shallower_than_the_band_is_proposed_by_the_finer_band_with_fine_extra() -> None:
    tested = template_board()
    tested[17:20, 40:54] = COPPER  # a 3 px stub on track A's upper edge: 1 px of it lies beyond the band
    loose = {"copper": "bright", "min_pixels": 4, "open_size": 2}  # as the learned detector's candidates
    assert len(ClassicalDetector(**loose).detect(tested, template_board())) == 0
    assert len(ClassicalDetector(**loose, fine_k=1).detect(tested, template_board())) == 0  # missing copper only
    found, from_fine = ClassicalDetector(**loose, fine_k=1, fine_extra=True).propose(tested, template_board())
    assert found.types.tolist() == [4] and from_fine.tolist() == [True]  # a spur, from the finer band
    assert overlaps(found.boxes[0], np.s_[17:20, 40:54])
    clean = ClassicalDetector(copper="bright", fine_k=1, fine_extra=True).detect(template_board(), template_board())
    assert len(clean) == 0
    deep = with_defect(4)  # a spur the band sees is proposed once, not again by the finer band
    assert len(ClassicalDetector(copper="bright", fine_k=1, fine_extra=True).detect(deep, template_board())) == 1
    with pytest.raises(ValueError, match="fine_extra .* needs fine_k"):
        ClassicalDetector(fine_extra=True)


def test_propose_marks_the_boxes_only_the_finer_band_found() -> None:
    tested = with_defect(3)  # a bite the 2 px band sees, out of track B...
    tested[87:90, 40:48] = BACKGROUND  # ...and a shallower one out of the pad, which only the 1 px band sees
    fine = ClassicalDetector(copper="bright", min_pixels=4, open_size=2, fine_k=1)
    found, from_fine = fine.propose(tested, template_board())
    assert len(found) == 2 and from_fine.dtype == bool and from_fine.tolist().count(True) == 1
    assert overlaps(found.boxes[from_fine][0], np.s_[87:90, 40:48])
    assert overlaps(found.boxes[~from_fine][0], DEFECTS[3][0])
    np.testing.assert_array_equal(fine.detect(tested, template_board()).boxes, found.boxes)  # same order
    coarse, none = ClassicalDetector(copper="bright", min_pixels=4, open_size=2).propose(tested, template_board())
    assert len(coarse) == 1 and not none.any()
    empty, nothing = fine.propose(template_board(), template_board())
    assert len(empty) == 0 and nothing.shape == (0,)


def test_copper_filling_a_hole_of_the_template_is_the_templates_flaw_not_a_defect() -> None:
    hole = np.s_[72:84, 42:54]
    flawed_template = template_board()
    flawed_template[hole] = BACKGROUND  # the template has a 12 px hole in its pad; the tested board has none
    unfiltered = ClassicalDetector(copper="bright", template_flaws=False).detect(template_board(), flawed_template)
    assert len(unfiltered) == 1 and overlaps(unfiltered.boxes[0], hole)  # extra copper, without the rule
    assert len(ClassicalDetector(copper="bright").detect(template_board(), flawed_template)) == 0
    same = template_board()
    same[hole] = BACKGROUND
    assert len(ClassicalDetector(copper="bright").detect(same, flawed_template)) == 0  # the same hole: nothing
    tested = template_board()
    for code in (2, 5):  # a bridge between the tracks and an isolated blob are still found beside the flaw
        region, value = DEFECTS[code]
        tested[region] = value
    found = ClassicalDetector(copper="bright").detect(tested, flawed_template)
    assert sorted(found.types.tolist()) == [2, 5]
    fine = ClassicalDetector(copper="bright", fine_k=1, fine_extra=True, filled_gaps=True)
    assert len(fine.detect(template_board(), flawed_template)) == 0  # nor proposed by the finer band or the gaps
