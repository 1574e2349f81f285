"""Integer-pixel registration of a tested board image onto its template (NumPy only).

Shift convention used throughout: a :class:`Shift` ``(dy, dx)`` means that the tested image is the
template moved down by ``dy`` and right by ``dx`` pixels::

    tested[y, x] ~= template[y - dy, x - dx]

so ``shift_image(template, s.dy, s.dx)`` lays the template over the tested image.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pcbsiam.errors import RegistrationError

__all__ = ["Shift", "estimate_shift", "shift_image", "overlap_mask"]

#: Relative cost added per pixel of |dy| + |dx|: breaks near-ties in favour of short shifts.
_SHIFT_PENALTY = 0.01
#: The pyramid stops once the search radius at its coarsest level is at most this many pixels...
_COARSE_MAX_SHIFT = 4
#: ...or once its coarsest level is narrower than this many pixels (so it stays at least half that).
_MIN_COARSE_SIZE = 128


@dataclass(frozen=True)
class Shift:
    """Integer translation of the tested image relative to its template.

    Attributes:
        dy: rows; positive when the tested content sits lower than the template's.
        dx: columns; positive when the tested content sits further right.
        score: confidence in [0, 1]: the Pearson correlation of the two images over their
            overlap once aligned (clipped at 0).
    """

    dy: int
    dx: int
    score: float


def _as_float_image(img: np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(img)
    if arr.ndim != 2:
        raise RegistrationError(f"The {name} image must be a 2-D greyscale array, got shape {arr.shape}.")
    return arr.astype(np.float32, copy=False)


def _overlap_slices(shape: tuple[int, int], dy: int, dx: int) -> tuple[tuple[slice, slice], tuple[slice, slice]]:
    """Slices ``(dst, src)`` with ``out[dst] = img[src]`` for a translation by ``(dy, dx)``."""
    h, w = shape
    dst = (slice(max(dy, 0), h + min(dy, 0)), slice(max(dx, 0), w + min(dx, 0)))
    src = (slice(max(-dy, 0), h - max(dy, 0)), slice(max(-dx, 0), w - max(dx, 0)))
    return dst, src


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    a = a - a.mean()
    b = b - b.mean()
    denom = float(np.sqrt(np.sum(a * a, dtype=np.float64) * np.sum(b * b, dtype=np.float64)))
    if denom == 0.0:
        return 0.0
    return float(np.sum(a * b, dtype=np.float64) / denom)


def _downsample2(img: np.ndarray) -> np.ndarray:
    """(H, W) -> (H // 2, W // 2) by averaging 2x2 blocks."""
    h, w = img.shape
    a = img[: h // 2 * 2, : w // 2 * 2]
    return 0.25 * (a[0::2, 0::2] + a[1::2, 0::2] + a[0::2, 1::2] + a[1::2, 1::2])


def _match_cost(t: np.ndarray, r: np.ndarray, dy: int, dx: int, scale: int) -> float:
    """Mean squared difference over the overlap, times a small preference for short shifts."""
    dst, src = _overlap_slices(t.shape, dy, dx)
    diff = t[dst] - r[src]
    mse = float(np.mean(diff * diff, dtype=np.float64))
    return mse * (1.0 + _SHIFT_PENALTY * scale * (abs(dy) + abs(dx)))


def _local_descent(t: np.ndarray, r: np.ndarray, start: tuple[int, int], limit: int, scale: int) -> tuple[int, int]:
    """Move to the best of the 8 neighbours until the current shift is the best; stay within ``limit``."""
    cache: dict[tuple[int, int], float] = {}
    cur = start
    while True:
        best = cur
        for ddy in (-1, 0, 1):
            for ddx in (-1, 0, 1):
                cand = (cur[0] + ddy, cur[1] + ddx)
                if max(abs(cand[0]), abs(cand[1])) > limit:
                    continue
                if cand not in cache:
                    cache[cand] = _match_cost(t, r, cand[0], cand[1], scale)
                if best not in cache or cache[cand] < cache[best]:
                    best = cand
        if best == cur:
            return cur
        cur = best


def estimate_shift(
    tested: np.ndarray,
    template: np.ndarray,
    max_shift: int = 16,
    min_score: float = 0.3,
) -> Shift:
    """Find the integer translation that best maps ``template`` onto ``tested``.

    Coarse-to-fine normalised cross-correlation: both images are standardised (zero mean, unit
    variance), an image pyramid of 2x2 block means is built, every shift is tried on the coarsest
    level and the estimate is refined by local search on each finer level, minimising the mean
    squared difference over the overlap (equivalent to maximising the correlation). Among nearly
    equal matches the shorter shift wins (1 % cost penalty per pixel of ``|dy| + |dx|``), which
    settles boards invariant along one axis (parallel traces). Convention:
    ``tested[y, x] ~= template[y - dy, x - dx]``.

    Args:
        tested: (H, W) greyscale image, any real dtype (usually uint8).
        template: (H, W) greyscale image of the defect-free board.
        max_shift: largest displacement searched along each axis, in pixels.
        min_score: smallest acceptable confidence (Pearson correlation once aligned).

    Returns:
        The :class:`Shift` found.

    Raises:
        RegistrationError: the sizes differ, ``max_shift`` does not fit the image, the best
            shift lies on the search limit, or the confidence is below ``min_score``.
    """
    t = _as_float_image(tested, "tested")
    r = _as_float_image(template, "template")
    if t.shape != r.shape:
        raise RegistrationError(
            f"The tested image {t.shape} and the template {r.shape} must have the same size to be registered."
        )
    h, w = t.shape
    if max_shift < 1 or 2 * max_shift >= min(h, w):
        raise RegistrationError(f"max_shift={max_shift} must be at least 1 and less than half the {h}x{w} image size.")
    t = (t - t.mean()) / (float(t.std()) + 1e-6)
    r = (r - r.mean()) / (float(r.std()) + 1e-6)
    pyramid = [(t, r)]
    while (max_shift >> (len(pyramid) - 1)) > _COARSE_MAX_SHIFT and min(pyramid[-1][0].shape) >= _MIN_COARSE_SIZE:
        pyramid.append((_downsample2(pyramid[-1][0]), _downsample2(pyramid[-1][1])))
    top = len(pyramid) - 1
    tc, rc = pyramid[top]
    limit = min((max_shift >> top) + 1, min(tc.shape) // 2 - 1)
    costs = {
        (dy, dx): _match_cost(tc, rc, dy, dx, 1 << top)
        for dy in range(-limit, limit + 1)
        for dx in range(-limit, limit + 1)
    }
    dy, dx = min(costs, key=costs.__getitem__)
    for level in range(top - 1, -1, -1):
        tl, rl = pyramid[level]
        dy, dx = _local_descent(tl, rl, (2 * dy, 2 * dx), max_shift >> level, 1 << level)
    dst, src = _overlap_slices((h, w), dy, dx)
    score = max(0.0, min(1.0, _pearson(t[dst], r[src])))
    if max(abs(dy), abs(dx)) >= max_shift:
        raise RegistrationError(
            f"The best shift (dy={dy}, dx={dx}) lies on the search limit max_shift={max_shift}: "
            "the images are probably not of the same board, or max_shift is too small."
        )
    if score < min_score:
        raise RegistrationError(
            f"Registration confidence {score:.3f} is below min_score={min_score}: "
            "the tested image does not match its template."
        )
    return Shift(dy=dy, dx=dx, score=score)


def shift_image(img: np.ndarray, dy: int, dx: int, fill: float | int | bool = 0) -> np.ndarray:
    """Translate an image by whole pixels, keeping its size: ``out[y, x] = img[y - dy, x - dx]``.

    Args:
        img: (H, W) or (H, W, C) array; the translation applies to the first two axes.
        dy: rows to move down (negative: up).
        dx: columns to move right (negative: left).
        fill: value of the pixels uncovered by the translation.

    Returns:
        Array of the same shape and dtype as ``img``.
    """
    arr = np.asarray(img)
    out = np.full_like(arr, fill)
    h, w = arr.shape[:2]
    if abs(dy) >= h or abs(dx) >= w:
        return out
    dst, src = _overlap_slices((h, w), int(dy), int(dx))
    out[dst] = arr[src]
    return out


def overlap_mask(shape: tuple[int, int], dy: int, dx: int) -> np.ndarray:
    """Pixels of an (H, W) image still covered by a template translated by ``(dy, dx)``.

    Returns:
        (H, W) bool array, True where ``shift_image(template, dy, dx)`` holds template data.
    """
    mask = np.zeros(shape, dtype=bool)
    if abs(dy) < shape[0] and abs(dx) < shape[1]:
        dst, _ = _overlap_slices(shape, int(dy), int(dx))
        mask[dst] = True
    return mask
