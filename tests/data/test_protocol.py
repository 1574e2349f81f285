from pathlib import Path

import numpy as np
import pytest

from pcbsiam.data.deeppcb import read_deeppcb
from pcbsiam.data.protocol import cut_patches, grid_origins, held_boxes, label_patch, overlap_fractions
from pcbsiam.data.records import BoardPair


def pair(boxes: list[list[int]]) -> BoardPair:
    return BoardPair("b", "group1", Path("t.jpg"), Path("r.jpg"), np.asarray(boxes, np.int64).reshape(-1, 5))


def test_grid() -> None:
    assert grid_origins(640, 128, 128) == [0, 128, 256, 384, 512]
    assert grid_origins(300, 128, 64) == [0, 64, 128]
    assert grid_origins(100, 128, 128) == []


def test_overlap_fraction_half_open() -> None:
    boxes = np.array([[120, 0, 136, 10, 1]])  # 16 px wide, 8 inside [0,128)
    assert overlap_fractions(boxes, 0, 0, 128, 128).tolist() == [0.5]
    assert overlap_fractions(np.array([[128, 0, 140, 10, 1]]), 0, 0, 128, 128).tolist() == [0.0]


def test_a_patch_holds_the_boxes_with_half_their_area_inside() -> None:
    detections = np.array([[120, 0, 136, 10, 0.9, 3], [121, 0, 137, 10, 0.9, 3], [0, 0, 4, 4, 0.2, 1]])  # x1..type
    assert held_boxes(detections, 0, 0, 128, 128).tolist() == [True, False, True]  # 8/16 held, 7/16 not
    assert held_boxes(detections[:, :4], 0, 0, 128, 128, min_fraction=0.6).tolist() == [False, False, True]
    assert held_boxes(np.zeros((0, 4)), 0, 0, 128, 128).tolist() == []


def test_labels_hand_made_board() -> None:
    boxes = [
        [10, 10, 30, 30, 3],  # wholly in patch (0,0): defective, mousebite
        [250, 10, 262, 20, 2],  # 6 of 12 px in patch (0,128) -> f = 0.5: defective (short)
        [380, 10, 400, 20, 5],  # 4 of 20 px in patch (0,256) -> 0.2, but the short's 0.5 wins there
        [120, 200, 130, 210, 4],  # f 0.8 in (128,0), 0.2 in (128,128): defective / left out
    ]
    idx = cut_patches([pair(boxes)], [(256, 512)], patch=128)
    got = {(int(r["y"]), int(r["x"])): (int(r["label"]), int(r["defect"])) for r in idx.rows}
    assert got[(0, 0)] == (1, 3)
    assert got[(0, 128)] == (1, 2)
    assert got[(0, 384)] == (1, 5)  # 16 of 20 px
    assert got[(0, 256)] == (1, 2)
    assert got[(128, 0)] == (1, 4)
    assert (128, 128) not in got
    assert got[(128, 256)] == (0, 0) and got[(128, 384)] == (0, 0)
    assert idx.stats()["patches"] == 7 and idx.stats()["defective"] == 5


def test_type_tie_takes_first_box_in_file_order() -> None:
    label, kind = label_patch(np.array([[0, 0, 10, 10, 6], [20, 20, 30, 30, 1]]), 0, 0, 128, 128)
    assert (label, kind) == (1, 6)


def test_stride_and_patch_are_settings() -> None:
    idx = cut_patches([pair([])], [(256, 256)], patch=128, stride=64)
    assert len(idx) == 9
    with pytest.raises(ValueError):
        cut_patches([pair([])], [(256, 256)], patch=0)


def test_reference_counts_on_shared_trainval(shared_deeppcb: Path) -> None:
    boards = read_deeppcb(shared_deeppcb, "trainval.txt")
    stats = cut_patches(boards.pairs, [(640, 640)] * len(boards.pairs)).stats()
    assert (stats["patches"], stats["defective"], stats["defect_free"]) == (22332, 5801, 16531)
    assert stats["by_type"] == {
        "open": 1099,
        "short": 848,
        "mousebite": 1194,
        "spur": 903,
        "spurious_copper": 883,
        "pin_hole": 874,
    }
