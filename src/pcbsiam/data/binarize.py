"""Binarising near-binary board scans: Otsu's grey level per image, copper above it.

Shared by the classical tolerance-band comparison (:mod:`pcbsiam.evaluation.baseline`) and the classical
detector (:mod:`pcbsiam.detection.classical`). NumPy only; works on a single image or a batch (the last
two axes are the image axes).
"""

from __future__ import annotations

import numpy as np

__all__ = ["binarize", "otsu_threshold"]


def otsu_threshold(img: np.ndarray) -> np.ndarray | int:
    """Otsu's threshold of uint8 images: copper is ``img > threshold``.

    Args:
        img: (H, W) or (..., H, W) uint8 array; one threshold per image (last two axes).

    Returns:
        An int for a single (H, W) image, otherwise an int array of shape ``img.shape[:-2]``.
    """
    arr = np.asarray(img)
    if arr.dtype != np.uint8:
        raise ValueError(f"Otsu's threshold needs uint8 images, got {arr.dtype}.")
    if arr.ndim < 2:
        raise ValueError(f"Expected an (H, W) or (..., H, W) image array, got shape {arr.shape}.")
    # Hand-written: skimage's threshold_otsu takes a plateau's first level and calls a flat white image all dark.
    lead = arr.shape[:-2]
    flat = arr.reshape(-1, arr.shape[-2] * arr.shape[-1])
    # One bincount per image: faster than one over offset codes, and no int64 copy of the whole batch.
    hist = np.zeros((flat.shape[0], 256), dtype=np.float64)
    for i, row in enumerate(flat):
        hist[i] = np.bincount(row, minlength=256)
    levels = np.arange(256, dtype=np.float64)
    w0 = np.cumsum(hist, axis=1)  # pixels <= t
    m0 = np.cumsum(hist * levels, axis=1)
    total = w0[:, -1:]
    mean_total = m0[:, -1:]
    w1 = total - w0
    with np.errstate(divide="ignore", invalid="ignore"):
        between = (mean_total * w0 - m0 * total) ** 2 / (w0 * w1)
    between = np.where((w0 > 0) & (w1 > 0), between, -1.0)
    # Take the middle of a plateau of maxima (a two-level image is split halfway between its levels).
    best = between.max(axis=1, keepdims=True)
    is_best = between >= best - 1e-9 * np.abs(best)
    first = np.argmax(is_best, axis=1)
    last = 255 - np.argmax(is_best[:, ::-1], axis=1)
    thr = (first + last) // 2
    # Single-level images: everything is background unless it is bright.
    thr = np.where(best[:, 0] < 0, 127, thr).astype(np.int64)
    if not lead:
        return int(thr[0])
    return thr.reshape(lead)


def binarize(img: np.ndarray, threshold: int | None = None) -> np.ndarray:
    """Copper mask of a near-binary board image: ``img > threshold``.

    Args:
        img: (H, W) or (..., H, W) uint8 image(s).
        threshold: grey level; ``None`` picks Otsu's threshold per image.

    Returns:
        bool array of the same shape.
    """
    arr = np.asarray(img)
    if threshold is not None:
        return arr > threshold
    thr = np.asarray(otsu_threshold(arr))
    return arr > thr[..., None, None]
