"""Patch crops to tensors: scaling, resizing and joint augmentation of tested and reference patches."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from numpy.lib.stride_tricks import sliding_window_view

#: ImageNet statistics reduced to one grey channel (mean and std of the RGB means).
GREY_MEAN = 0.449
GREY_STD = 0.226


def context_box(y: int, x: int, h: int, w: int, context: int) -> tuple[int, int, int, int]:
    """The box ``(y, x, h, w)`` grown by ``context`` px on each side (``data.context``)."""
    return y - context, x - context, h + 2 * context, w + 2 * context


def crop(img: np.ndarray, y: int, x: int, h: int, w: int, fill: int | None = 0) -> np.ndarray:
    """Crop ``[y, y+h) x [x, x+w)`` from ``img``, padding with ``fill`` where it leaves the image.

    Args:
        img: (H, W) uint8.
        fill: the padding value; None for the image's median (the board's background), computed only
            when the crop leaves the image.

    Returns:
        (h, w) uint8.
    """
    H, W = img.shape
    if y >= 0 and x >= 0 and y + h <= H and x + w <= W:
        return img[y : y + h, x : x + w]
    out = np.full((h, w), int(np.median(img)) if fill is None else fill, dtype=img.dtype)
    ys, xs = max(y, 0), max(x, 0)
    ye, xe = min(y + h, H), min(x + w, W)
    if ye > ys and xe > xs:
        out[ys - y : ye - y, xs - x : xe - x] = img[ys:ye, xs:xe]
    return out


def inside(y: int, x: int, h: int, w: int, shape: tuple[int, ...]) -> np.ndarray:
    """(h, w) bool: which pixels of the crop ``[y, y+h) x [x, x+w)`` lie inside an image of ``shape``."""
    rows = (np.arange(y, y + h) >= 0) & (np.arange(y, y + h) < shape[0])
    cols = (np.arange(x, x + w) >= 0) & (np.arange(x, x + w) < shape[1])
    return rows[:, None] & cols[None, :]


def crop_pair(
    tested: np.ndarray,
    reference: np.ndarray,
    tested_box: tuple[int, int, int, int],
    reference_box: tuple[int, int, int, int],
    fill: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Tested and reference crops that agree wherever either image has nothing to show.

    Where a box leaves its image (a border patch with context, or a reference crop moved by the
    board's shift), the tested crop takes the reference crop's pixels, and both are padded with the
    same ``fill``: padding never looks like a difference between the two.

    Args:
        tested: (H, W) uint8 tested image.
        reference: (H', W') uint8 reference image.
        tested_box: (y, x, h, w) in ``tested``.
        reference_box: (y, x, h, w) in ``reference``, same h and w.
        fill: padding value (the reference's background).

    Returns:
        (h, w) uint8 tested and reference crops.
    """
    t = crop(tested, *tested_box, fill=fill)
    r = crop(reference, *reference_box, fill=fill)
    valid = inside(*tested_box, tested.shape) & inside(*reference_box, reference.shape)
    if not valid.all():
        t = np.where(valid, t, r)
    return t, r


def refine_shift(
    tested: np.ndarray, reference: np.ndarray, box: tuple[int, int, int, int], reference_box: tuple, radius: int
) -> tuple[int, int]:
    """The move of ``reference_box`` within +-``radius`` px that best matches the tested crop.

    Local registration on top of a board's global shift: boards are not perfectly rigid, and a few px
    of local misalignment look like a defect. The match is the mean absolute difference over the
    pixels both crops have; ties go to the smallest move, so a featureless patch stays put.

    Args:
        tested: (H, W) uint8 tested image; ``box`` its crop (y, x, h, w).
        reference: (H', W') uint8 reference image; ``reference_box`` the crop before refinement.
        radius: largest move in px per axis.

    Returns:
        (dy, dx) to add to ``reference_box``'s corner.
    """
    if radius <= 0:
        return 0, 0
    y, x, h, w = reference_box
    t = crop(tested, *box, fill=0).astype(np.int16)
    t_ok = inside(*box, tested.shape)
    big = crop(reference, y - radius, x - radius, h + 2 * radius, w + 2 * radius, fill=0).astype(np.int16)
    big_ok = inside(y - radius, x - radius, h + 2 * radius, w + 2 * radius, reference.shape)
    side = 2 * radius + 1
    diff = np.abs(sliding_window_view(big, (h, w)) - t)  # (side, side, h, w): every move at once
    if t_ok.all() and big_ok.all():
        sums, counts = diff.sum(axis=(2, 3), dtype=np.int64), np.full((side, side), h * w, np.int64)
    else:
        ok = sliding_window_view(big_ok, (h, w)) & t_ok
        sums, counts = np.where(ok, diff, 0).sum(axis=(2, 3), dtype=np.int64), ok.sum(axis=(2, 3))
    cost = np.where(counts > 0, sums / np.maximum(counts, 1), np.inf)  # the same means as a loop over moves
    moves = np.arange(-radius, radius + 1)
    manhattan = np.abs(moves)[:, None] + np.abs(moves)[None, :]
    # least cost, then the smallest move, then the first in row-major order (dy, then dx ascending)
    order = np.lexsort((np.arange(side * side), manhattan.ravel(), cost.ravel()))
    k = int(order[0])
    return int(moves[k // side]), int(moves[k % side])


def registered_box(
    tested: np.ndarray,
    reference: np.ndarray,
    box: tuple[int, int, int, int],
    shift: tuple[int, int],
    local_shift: int = 0,
) -> tuple[int, int, int, int]:
    """The reference crop that shows what ``box`` of the tested image should show.

    Args:
        tested: (H, W) uint8 tested image; ``box`` a crop (y, x, h, w) of it.
        reference: (H', W') uint8 reference image.
        shift: the board's global (dy, dx), ``tested[y, x] ~ reference[y - dy, x - dx]``.
        local_shift: the crop then moves by up to this many px to the best match (:func:`refine_shift`).

    Returns:
        (y, x, h, w) in ``reference``.
    """
    y, x, h, w = box
    moved = (y - int(shift[0]), x - int(shift[1]), h, w)
    dy, dx = refine_shift(tested, reference, box, moved, local_shift)
    return moved[0] + dy, moved[1] + dx, h, w


def to_tensor(patches: np.ndarray | list[np.ndarray], size: int) -> torch.Tensor:
    """Stack uint8 patches into a normalised float batch, resized to ``size`` where needed.

    Args:
        patches: (B, h, w) uint8 or a list of (h_i, w_i) uint8.
        size: side of the output.

    Returns:
        (B, 1, size, size) float32.
    """
    if isinstance(patches, list) and len({p.shape for p in patches}) > 1:
        return torch.cat([to_tensor(p[None], size) for p in patches])
    arr = np.stack(patches) if isinstance(patches, list) else np.asarray(patches)
    # NumPy for the element-wise scaling: small torch ops pay thread start-up on every call
    scaled = arr.astype(np.float32) * np.float32(1.0 / (255.0 * GREY_STD)) - np.float32(GREY_MEAN / GREY_STD)
    t = torch.from_numpy(scaled).unsqueeze(1)
    if t.shape[-2:] != (size, size):
        # interpolation weights sum to one, so it commutes with the affine scaling above
        t = F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return t


def random_dihedral(rng: np.random.Generator) -> tuple[int, bool]:
    """A random element of the square's symmetry group: (quarter turns, horizontal flip)."""
    return int(rng.integers(4)), bool(rng.integers(2))


def apply_dihedral(patch: np.ndarray, turns: int, flip: bool) -> np.ndarray:
    """Rotate by ``turns`` quarter turns, then flip left-right if ``flip``; (h, w) -> (h', w')."""
    out = np.rot90(patch, turns) if turns else patch
    return np.ascontiguousarray(out[:, ::-1] if flip else out)
