"""Tests of pcbsiam.data.registration: shift convention, recovery of known shifts, errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pcbsiam.data.registration import Shift, estimate_shift, overlap_mask, shift_image
from pcbsiam.errors import PcbsiamError, RegistrationError

DEEPPCB = Path("/work/shared/datasets/DeepPCB/PCBData")
REAL_PAIR = DEEPPCB / "group20085" / "20085" / "20085000"


def random_rectangles(size: int = 256, n: int = 60, seed: int = 0) -> np.ndarray:
    """(size, size) uint8 image of random bright rectangles on black, like copper on a board."""
    rng = np.random.default_rng(seed)
    img = np.zeros((size, size), dtype=np.uint8)
    for _ in range(n):
        y, x = rng.integers(0, size - 8, 2)
        h, w = rng.integers(3, 40, 2)
        img[y : y + h, x : x + w] = 255
    return img


def test_shift_image_convention() -> None:
    img = np.arange(25, dtype=np.uint8).reshape(5, 5)
    out = shift_image(img, 1, -2, fill=99)
    assert out.shape == img.shape and out.dtype == img.dtype
    assert out[1, 0] == img[0, 2]  # out[y, x] == img[y - dy, x - dx]
    assert out[4, 2] == img[3, 4]
    assert np.all(out[0] == 99) and np.all(out[:, 3:] == 99)
    assert np.array_equal(shift_image(img, 0, 0), img)
    assert np.all(shift_image(img, 5, 0) == 0)


def test_overlap_mask_matches_shift_image() -> None:
    mask = overlap_mask((6, 7), -2, 3)
    moved = shift_image(np.ones((6, 7), dtype=bool), -2, 3, fill=False)
    assert np.array_equal(mask, moved)


@pytest.mark.parametrize("dy, dx", [(0, 0), (3, 5), (-4, 2), (7, -6), (-9, -11), (1, 0), (0, -1)])
def test_recovers_known_shift_on_synthetic_image(dy: int, dx: int) -> None:
    template = random_rectangles()
    tested = shift_image(template, dy, dx)
    shift = estimate_shift(tested, template, max_shift=16)
    assert (shift.dy, shift.dx) == (dy, dx)
    assert 0.9 <= shift.score <= 1.0
    aligned = shift_image(template, shift.dy, shift.dx)
    assert np.array_equal(aligned, tested)


def test_noise_does_not_break_recovery() -> None:
    rng = np.random.default_rng(3)
    template = random_rectangles(seed=5)
    tested = shift_image(template, -3, 4).astype(np.int16) + rng.integers(-40, 40, template.shape)
    shift = estimate_shift(np.clip(tested, 0, 255).astype(np.uint8), template, max_shift=8)
    assert (shift.dy, shift.dx) == (-3, 4)


@pytest.mark.skipif(not REAL_PAIR.with_name("20085000_temp.jpg").is_file(), reason="DeepPCB not available")
@pytest.mark.parametrize("dy, dx", [(5, -3), (-6, 2)])
def test_recovers_shift_applied_to_real_template(dy: int, dx: int) -> None:
    from PIL import Image

    tested = np.asarray(Image.open(f"{REAL_PAIR}_test.jpg").convert("L"))
    template = np.asarray(Image.open(f"{REAL_PAIR}_temp.jpg").convert("L"))
    # The template moved by a known amount is found exactly, whatever fills the uncovered strip.
    for fill in (0, int(np.median(template))):
        exact = estimate_shift(shift_image(template, dy, dx, fill=fill), template)
        assert (exact.dy, exact.dx) == (dy, dx)
        assert exact.score > 0.9
    # Against the real tested image (itself offset by a fraction of a pixel), moving the template by
    # (dy, dx) moves the estimate by -(dy, dx), up to one pixel of rounding.
    base = estimate_shift(tested, template)
    assert base.score > 0.9
    shift = estimate_shift(tested, shift_image(template, dy, dx, fill=int(np.median(template))))
    assert abs(shift.dy - (base.dy - dy)) <= 1 and abs(shift.dx - (base.dx - dx)) <= 1


def test_size_mismatch_raises_with_sentence() -> None:
    with pytest.raises(RegistrationError, match=r"same size") as info:
        estimate_shift(np.zeros((64, 64), np.uint8), np.zeros((64, 60), np.uint8))
    assert isinstance(info.value, PcbsiamError) and isinstance(info.value, ValueError)
    assert str(info.value).endswith(".")


def test_shift_beyond_search_limit_raises() -> None:
    template = random_rectangles()
    tested = shift_image(template, 12, 0)
    with pytest.raises(RegistrationError, match="search limit"):
        estimate_shift(tested, template, max_shift=6)


def test_unrelated_images_raise_low_confidence() -> None:
    a = random_rectangles(seed=1)
    b = random_rectangles(seed=2)
    with pytest.raises(RegistrationError):
        estimate_shift(a, b, max_shift=8, min_score=0.5)


def test_shift_is_a_frozen_dataclass() -> None:
    s = Shift(dy=1, dx=-2, score=0.5)
    with pytest.raises(AttributeError):
        s.dy = 3  # type: ignore[misc]
