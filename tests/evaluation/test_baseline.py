"""Tests of pcbsiam.evaluation.baseline: binarisation, tolerance defect map, scores, tiles, whole-board comparator."""

from __future__ import annotations

import numpy as np
import pytest

from pcbsiam.data.binarize import binarize, otsu_threshold
from pcbsiam.data.protocol import tile_grid
from pcbsiam.data.registration import shift_image
from pcbsiam.errors import RegistrationError
from pcbsiam.evaluation.baseline import (
    ClassicalComparator,
    batch_scores,
    defect_score,
    tile_scores,
    tolerance_defect_map,
)


def board(size: int = 128) -> np.ndarray:
    """(size, size) uint8 synthetic board: a few 12 px wide traces and a pad, copper 230 on 25."""
    img = np.full((size, size), 25, dtype=np.uint8)
    img[20:32, 10:118] = 230  # horizontal trace
    img[40:110, 60:72] = 230  # vertical trace
    img[70:90, 14:34] = 230  # pad
    return img


def test_otsu_and_binarize() -> None:
    img = board()
    thr = otsu_threshold(img)
    assert 25 <= thr < 230
    copper = binarize(img)
    assert copper.dtype == bool and np.array_equal(copper, img > 127)
    assert np.array_equal(binarize(img, threshold=240), np.zeros_like(copper))
    stack = np.stack([img, img // 2])
    assert np.array_equal(binarize(stack)[1], binarize(img // 2))


@pytest.mark.parametrize("k", [1, 2, 3])
@pytest.mark.parametrize("neighbourhood", ["square", "disk"])
def test_tolerance_map_empty_for_identical_and_small_shifts(k: int, neighbourhood: str) -> None:
    template = binarize(board())
    assert not tolerance_defect_map(template, template, k, neighbourhood, open_size=0).any()  # type: ignore[arg-type]
    for dy, dx in [(k, 0), (0, -k), (-1, 1), (1, 0)]:
        if neighbourhood == "disk" and dy * dy + dx * dx > k * k:
            continue
        # Copper moved by up to k px; the strip uncovered at the image edge is background in both.
        tested = shift_image(template, dy, dx, fill=False)
        defects = tolerance_defect_map(tested, template, k, neighbourhood, open_size=0)  # type: ignore[arg-type]
        assert not defects.any(), (dy, dx)


@pytest.mark.parametrize("k", [1, 2, 3])
def test_tolerance_map_finds_blob_and_cut(k: int) -> None:
    template = board()
    blob = template.copy()
    blob[100:108, 100:108] = 230  # 8x8 spurious copper far from any trace
    cut = template.copy()
    cut[20:32, 90:98] = 25  # an 8 px gap through the 12 px wide horizontal trace
    tmpl_bin = binarize(template)
    blob_map = tolerance_defect_map(binarize(blob), tmpl_bin, k)
    cut_map = tolerance_defect_map(binarize(cut), tmpl_bin, k)
    assert blob_map.any() and blob_map[100:108, 100:108].sum() == blob_map.sum()
    assert cut_map.any() and cut_map[20:32, 90:98].sum() == cut_map.sum()
    assert defect_score(blob, template, k) == int(blob_map.sum()) > 0
    assert defect_score(template, template, k) == 0


def test_defect_score_with_registration() -> None:
    template = board()
    tested = shift_image(template, 6, -5, fill=25)
    tested[100:108, 100:108] = 230
    assert defect_score(tested, template, k=2, register=True) == defect_score(tested[6:, :-5], template[:-6, 5:], k=2)
    with pytest.raises(RegistrationError):
        defect_score(tested, template[:, :100], register=True)


def test_batch_scores_equals_loop() -> None:
    rng = np.random.default_rng(0)
    tested = np.stack([board() for _ in range(6)])
    templates = tested.copy()
    for i in range(1, 6):
        y, x = rng.integers(0, 110, 2)
        tested[i, y : y + 9, x : x + 7] = 255 - tested[i, y : y + 9, x : x + 7]
    tested = np.clip(tested.astype(np.int16) + rng.integers(-20, 20, tested.shape), 0, 255).astype(np.uint8)
    for kwargs in ({"k": 2}, {"k": 1, "open_size": 0, "neighbourhood": "square"}, {"k": 3, "threshold": 100}):
        scores = batch_scores(tested, templates, **kwargs)  # type: ignore[arg-type]
        assert scores.shape == (6,) and scores.dtype == np.float64
        expected = [defect_score(t, r, **kwargs) for t, r in zip(tested, templates, strict=True)]  # type: ignore[arg-type]
        assert scores.tolist() == expected
        assert scores[0] == 0 and scores[1:].max() > 0


def test_tile_scores_hand_worked() -> None:
    dmap = np.zeros((4, 6), dtype=bool)
    dmap[0, 0] = dmap[1, 1] = dmap[3, 5] = dmap[2, 3] = True
    tiles = np.array([[0, 0, 2, 2], [0, 0, 4, 6], [2, 3, 2, 3], [1, 1, 0, 4], [3, 5, 1, 1], [0, 2, 2, 4]])
    assert tile_scores(dmap, tiles).tolist() == [2, 4, 2, 0, 1, 0]
    with pytest.raises(ValueError, match="does not fit"):
        tile_scores(dmap, np.array([[3, 0, 2, 2]]))


def test_tile_grid() -> None:
    tiles = tile_grid(640, 640, 128)
    assert tiles.shape == (25, 4)
    assert tiles[0].tolist() == [0, 0, 128, 128] and tiles[6].tolist() == [128, 128, 128, 128]
    assert tile_grid(100, 300, 128).shape == (0, 4)


def test_comparator_scores_whole_board_and_tiles() -> None:
    template = np.tile(board(), (2, 2))  # 256x256
    tested = shift_image(template, -3, 2, fill=25)
    tested[225:235, 215:225] = 230  # spurious copper in tile (1, 1), away from the traces
    comparator = ClassicalComparator(k=2)
    dmap, shift = comparator.score_board(tested, template)
    assert (shift.dy, shift.dx) == (-3, 2) and shift.score > 0.9
    assert dmap.shape == tested.shape and dmap.dtype == bool
    scores = tile_scores(dmap, tile_grid(256, 256, 128))
    assert scores[3] > 0 and scores[:3].sum() == 0
    assert scores.sum() == dmap.sum()


def test_comparator_blank_template() -> None:
    tested = board()
    blank = np.full_like(tested, 25)
    with pytest.raises(RegistrationError):
        ClassicalComparator().score_board(tested, blank)
    dmap, shift = ClassicalComparator(allow_unregistered=True).score_board(tested, blank)
    assert (shift.dy, shift.dx, shift.score) == (0, 0, 0.0)
    assert dmap.any()
    with pytest.raises(RegistrationError, match="same size"):
        ClassicalComparator(allow_unregistered=True).score_board(tested, blank[:, :64])
