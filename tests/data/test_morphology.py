"""pcbsiam.data.morphology: dilation, erosion and opening by shifted ORs, equal to scipy.ndimage's."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from pcbsiam.data.morphology import dilate, erode, open_map


@pytest.mark.parametrize("neighbourhood", ["square", "disk"])
def test_dilate_and_erode(neighbourhood: str) -> None:
    point = np.zeros((9, 9), dtype=bool)
    point[4, 4] = True
    grown = dilate(point, 2, neighbourhood)  # type: ignore[arg-type]
    assert grown[4, 2] and grown[2, 4] and not grown[4, 1]
    assert grown[2, 2] == (neighbourhood == "square")
    assert np.array_equal(erode(grown, 2, neighbourhood), point)  # type: ignore[arg-type]
    assert np.array_equal(erode(np.ones((5, 5), bool), 3), np.ones((5, 5), bool))  # outside counts as True


def test_open_map_drops_thin_specks() -> None:
    mask = np.zeros((10, 10), dtype=bool)
    mask[1, 1] = True
    mask[5, 2:8] = True  # one pixel thick
    mask[6:9, 6:9] = True
    opened = open_map(mask, 3)
    assert opened.sum() == 9 and opened[6:9, 6:9].all()
    assert np.array_equal(open_map(mask, 1), mask)


@pytest.mark.parametrize("k", [0, 1, 2, 3, 5])
@pytest.mark.parametrize("neighbourhood", ["square", "disk"])
def test_morphology_equals_scipy(k: int, neighbourhood: str) -> None:
    # (N, H, W) batch; scipy gets a structure of one image's extent so images do not touch.
    mask = np.random.default_rng(k).random((3, 23, 31)) < 0.3
    yy, xx = np.mgrid[-k : k + 1, -k : k + 1]
    element = np.ones_like(yy, bool) if neighbourhood == "square" else yy * yy + xx * xx <= k * k
    got = dilate(mask, k, neighbourhood)  # type: ignore[arg-type]
    assert np.array_equal(got, ndi.binary_dilation(mask, element[None]))
    want = ndi.binary_erosion(mask, element[None], border_value=1)
    assert np.array_equal(erode(mask, k, neighbourhood), want)  # type: ignore[arg-type]
    assert np.array_equal(dilate(mask[0], k, neighbourhood), got[0])  # type: ignore[arg-type]


@pytest.mark.parametrize("size", [2, 3, 4, 5])
def test_open_map_equals_scipy(size: int) -> None:
    mask = np.random.default_rng(size).random((3, 23, 31)) < 0.6
    assert np.array_equal(open_map(mask, size), ndi.binary_opening(mask, np.ones((1, size, size), bool)))
