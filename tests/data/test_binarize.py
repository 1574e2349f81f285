"""Tests of pcbsiam.data.binarize: Otsu's threshold against a plain search, its tie rules, batches."""

from __future__ import annotations

import numpy as np
import pytest

from pcbsiam.data.binarize import binarize, otsu_threshold


def _between_class_variance(img: np.ndarray, t: int) -> float:
    """Otsu's criterion w0 * w1 * (mean1 - mean0) ** 2 of splitting ``img`` into ``<= t`` and ``> t``."""
    low, high = img[img <= t].astype(np.float64), img[img > t].astype(np.float64)
    if low.size == 0 or high.size == 0:
        return -1.0
    return low.size * high.size * (high.mean() - low.mean()) ** 2 / img.size**2


@pytest.mark.parametrize("seed", range(5))
def test_otsu_maximises_between_class_variance(seed: int) -> None:
    rng = np.random.default_rng(seed)
    # Two noisy levels, as on a scanned board.
    img = np.where(rng.random((40, 40)) < 0.3, 200, 60) + rng.normal(0, 15, (40, 40))
    img = np.clip(img, 0, 255).astype(np.uint8)
    variances = np.array([_between_class_variance(img, t) for t in range(256)])
    thr = otsu_threshold(img)
    assert isinstance(thr, int)
    assert variances[thr] == pytest.approx(variances.max(), rel=1e-9)


def test_tie_rules() -> None:
    # Two levels: every threshold from 25 to 229 splits them alike; the middle of that plateau is kept.
    two = np.full((8, 8), 25, np.uint8)
    two[:, 4:] = 230
    assert otsu_threshold(two) == (25 + 229) // 2
    # One level: there is nothing to split; 127 makes a flat dark image all dark and a flat bright one all bright.
    assert otsu_threshold(np.full((8, 8), 40, np.uint8)) == 127
    assert binarize(np.full((8, 8), 255, np.uint8)).all()
    assert not binarize(np.full((8, 8), 40, np.uint8)).any()


def test_batch_equals_one_by_one() -> None:
    rng = np.random.default_rng(0)
    batch = rng.integers(0, 256, (2, 3, 16, 16), dtype=np.uint8)
    batch[0, 1] = 255
    thr = otsu_threshold(batch)
    assert isinstance(thr, np.ndarray) and thr.shape == (2, 3)
    assert [[otsu_threshold(img) for img in row] for row in batch] == thr.tolist()
    assert np.array_equal(binarize(batch), batch > thr[..., None, None])
    assert np.array_equal(binarize(batch, threshold=100), batch > 100)


def test_rejects_other_dtypes_and_shapes() -> None:
    with pytest.raises(ValueError, match="uint8"):
        otsu_threshold(np.zeros((4, 4), np.float32))
    with pytest.raises(ValueError, match="shape"):
        otsu_threshold(np.zeros(4, np.uint8))
