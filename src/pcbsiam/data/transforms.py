"""Patch crops to tensors: scaling, resizing and augmentation of tested and reference patches."""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

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


def _shared_offset_groups(boxes: np.ndarray, reference_boxes: np.ndarray) -> list[np.ndarray]:
    """Indices of the boxes that share one reference offset and gain by a joint search (overlapping or
    tightly packed boxes, as a grid of tiles); the others one by one."""
    offsets = reference_boxes[:, :2] - boxes[:, :2]
    groups: list[np.ndarray] = []
    for off in np.unique(offsets, axis=0):
        members = np.flatnonzero((offsets == off).all(axis=1))
        b = boxes[members]
        union = (b[:, 0].min(), b[:, 1].min(), (b[:, 0] + b[:, 2]).max(), (b[:, 1] + b[:, 3]).max())
        union_area = int(union[2] - union[0]) * int(union[3] - union[1])
        if len(members) > 1 and union_area <= int((b[:, 2] * b[:, 3]).sum()):
            groups.append(members)
        else:
            groups.extend(members[:, None])
    return groups


def _move_costs(
    tested: np.ndarray, reference: np.ndarray, boxes: np.ndarray, offset: tuple[int, int], radius: int
) -> np.ndarray:
    """(N, (2r+1)^2) mean absolute differences of ``boxes`` against the reference at ``offset`` plus each move.

    Every move's difference map is computed once over the boxes' union and summed per box through
    block sums on the coarsest grid their edges lie on (16 px for tiles with 16 px of context).
    """
    y0, x0 = int(boxes[:, 0].min()), int(boxes[:, 1].min())
    y1, x1 = int((boxes[:, 0] + boxes[:, 2]).max()), int((boxes[:, 1] + boxes[:, 3]).max())
    edges = np.concatenate(
        [boxes[:, 0] - y0, boxes[:, 0] + boxes[:, 2] - y0, boxes[:, 1] - x0, boxes[:, 1] + boxes[:, 3] - x0]
    )
    g = int(np.gcd.reduce(edges))
    by0, by1 = (boxes[:, 0] - y0) // g, (boxes[:, 0] + boxes[:, 2] - y0) // g
    bx0, bx1 = (boxes[:, 1] - x0) // g, (boxes[:, 1] + boxes[:, 3] - x0) // g
    (H, W), (Hr, Wr) = tested.shape, reference.shape
    moves = np.arange(-radius, radius + 1)
    sums = np.zeros((len(boxes), len(moves) ** 2), np.int64)
    counts = np.zeros_like(sums)
    diff = np.zeros((y1 - y0, x1 - x0), np.uint8)
    high = np.empty_like(diff)
    acc = np.uint16 if g * 255 < 2**16 else np.uint64  # column sums of g rows
    for k, (my, mx) in enumerate((a, b) for a in moves for b in moves):
        oy, ox = offset[0] + my, offset[1] + mx
        # tested pixels (y, x) of the union whose reference pixel (y + oy, x + ox) exists
        vy0, vy1 = max(0, -oy, y0), min(H, Hr - oy, y1)
        vx0, vx1 = max(0, -ox, x0), min(W, Wr - ox, x1)
        diff[:] = 0
        if vy1 > vy0 and vx1 > vx0:
            t = tested[vy0:vy1, vx0:vx1]
            r = reference[vy0 + oy : vy1 + oy, vx0 + ox : vx1 + ox]
            part = (slice(vy0 - y0, vy1 - y0), slice(vx0 - x0, vx1 - x0))
            np.maximum(t, r, out=high[part])
            np.minimum(t, r, out=diff[part])
            np.subtract(high[part], diff[part], out=diff[part])  # |t - r| in uint8
        blocks = (
            diff.reshape(-1, g, x1 - x0)
            .sum(axis=1, dtype=acc)
            .reshape(-1, (x1 - x0) // g, g)
            .sum(axis=2, dtype=np.int64)
        )
        table = np.zeros((blocks.shape[0] + 1, blocks.shape[1] + 1), np.int64)
        table[1:, 1:] = blocks.cumsum(0).cumsum(1)
        sums[:, k] = table[by1, bx1] - table[by0, bx1] - table[by1, bx0] + table[by0, bx0]
        ch = np.maximum(np.minimum(boxes[:, 0] + boxes[:, 2], vy1) - np.maximum(boxes[:, 0], vy0), 0)
        cw = np.maximum(np.minimum(boxes[:, 1] + boxes[:, 3], vx1) - np.maximum(boxes[:, 1], vx0), 0)
        counts[:, k] = ch * cw
    return np.where(counts > 0, sums / np.maximum(counts, 1), np.inf)


def refine_shifts(
    tested: np.ndarray,
    reference: np.ndarray,
    boxes: np.ndarray | list[tuple[int, int, int, int]],
    reference_boxes: np.ndarray | list[tuple[int, int, int, int]],
    radius: int,
) -> np.ndarray:
    """The move of each reference box within +-``radius`` px that best matches its tested crop.

    Local registration on top of a board's global shift: boards are not perfectly rigid, and a few px
    of local misalignment look like a defect. The match is the mean absolute difference over the
    pixels both crops have; ties go to the smallest move, then to the first in row-major order, so a
    featureless patch stays put. Boxes that share an offset to their reference box and cover an area
    together (a board's tiles) are searched together: each move's difference map is made once.

    Args:
        tested: (H, W) uint8 tested image.
        reference: (H', W') uint8 reference image.
        boxes: (N, 4) tested crops (y, x, h, w); they may leave the image.
        reference_boxes: (N, 4) the reference crops before refinement, same h and w as ``boxes``.
        radius: largest move in px per axis.

    Returns:
        (N, 2) int64 (dy, dx) to add to each reference box's corner.
    """
    if np.asarray(tested).dtype != np.uint8 or np.asarray(reference).dtype != np.uint8:
        raise TypeError("refine_shifts compares uint8 images")
    boxes = np.asarray(boxes, dtype=np.int64).reshape(-1, 4)
    reference_boxes = np.asarray(reference_boxes, dtype=np.int64).reshape(-1, 4)
    out = np.zeros((len(boxes), 2), np.int64)
    if radius <= 0 or len(boxes) == 0:
        return out
    moves = np.arange(-radius, radius + 1)
    side = len(moves)
    manhattan = (np.abs(moves)[:, None] + np.abs(moves)[None, :]).ravel()
    rank = np.arange(side * side)
    for members in _shared_offset_groups(boxes, reference_boxes):
        offset = tuple(int(v) for v in reference_boxes[members[0], :2] - boxes[members[0], :2])
        cost = _move_costs(tested, reference, boxes[members], offset, radius)
        # least cost, then the smallest move, then the first in row-major order (dy, then dx ascending)
        best = np.lexsort((np.broadcast_to(rank, cost.shape), np.broadcast_to(manhattan, cost.shape), cost))[:, 0]
        out[members, 0], out[members, 1] = moves[best // side], moves[best % side]
    return out


def refine_shift(
    tested: np.ndarray, reference: np.ndarray, box: tuple[int, int, int, int], reference_box: tuple, radius: int
) -> tuple[int, int]:
    """:func:`refine_shifts` of one box: (dy, dx) to add to ``reference_box``'s corner."""
    dy, dx = refine_shifts(tested, reference, [box], [reference_box], radius)[0]
    return int(dy), int(dx)


def registered_boxes(
    tested: np.ndarray,
    reference: np.ndarray,
    boxes: np.ndarray | list[tuple[int, int, int, int]],
    shift: tuple[int, int],
    local_shift: int = 0,
) -> np.ndarray:
    """The reference crops that show what ``boxes`` of the tested image should show.

    Args:
        tested: (H, W) uint8 tested image; ``boxes`` (N, 4) crops (y, x, h, w) of it.
        reference: (H', W') uint8 reference image.
        shift: the board's global (dy, dx), ``tested[y, x] ~ reference[y - dy, x - dx]``.
        local_shift: each crop then moves by up to this many px to its best match (:func:`refine_shifts`).

    Returns:
        (N, 4) int64 (y, x, h, w) in ``reference``.
    """
    moved = np.asarray(boxes, dtype=np.int64).reshape(-1, 4).copy()
    moved[:, 0] -= int(shift[0])
    moved[:, 1] -= int(shift[1])
    moved[:, :2] += refine_shifts(tested, reference, boxes, moved, local_shift)
    return moved


def registered_box(
    tested: np.ndarray,
    reference: np.ndarray,
    box: tuple[int, int, int, int],
    shift: tuple[int, int],
    local_shift: int = 0,
) -> tuple[int, int, int, int]:
    """:func:`registered_boxes` of one box: (y, x, h, w) in ``reference``."""
    y, x, h, w = registered_boxes(tested, reference, [box], shift, local_shift)[0]
    return int(y), int(x), int(h), int(w)


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


@dataclass(frozen=True)
class Photometric:
    """Ranges of :func:`random_photometric`: how far another scan of the same board may render it differently.

    Attributes:
        gain: contrast factor about mid-grey, drawn log-uniformly in ``[1 / gain, gain]``.
        shift: grey-level offset in ``[-shift, shift]`` (of 255).
        blur: chance of a Gaussian blur, and its sigma range in px.
        jpeg: chance of a JPEG round trip, and its quality range.
    """

    gain: float = 1.25
    shift: float = 20.0
    blur: float = 0.5
    sigma: tuple[float, float] = (0.3, 1.0)
    jpeg: float = 0.5
    quality: tuple[int, int] = (40, 95)


def random_photometric(patch: np.ndarray, rng: np.random.Generator, ranges: Photometric = Photometric()) -> np.ndarray:
    """The (h, w) uint8 ``patch`` rendered as another scan might: contrast and grey level, blur, JPEG quality.

    Every draw is made whatever the outcome, so the number of draws from ``rng`` is fixed (a resumed run
    sees the same augmentation). Geometry is unchanged: the pair stays registered.
    """
    from PIL import Image, ImageFilter  # Pillow: the dataset readers' decoder

    gain = float(np.exp(rng.uniform(-np.log(ranges.gain), np.log(ranges.gain))))
    shift = float(rng.uniform(-ranges.shift, ranges.shift))
    blur, sigma = rng.random() < ranges.blur, float(rng.uniform(*ranges.sigma))
    jpeg, quality = rng.random() < ranges.jpeg, int(rng.integers(ranges.quality[0], ranges.quality[1] + 1))
    out = np.clip((patch.astype(np.float32) - 127.5) * gain + 127.5 + shift, 0, 255).astype(np.uint8)
    if not (blur or jpeg):
        return out
    img = Image.fromarray(out)
    if blur:
        img = img.filter(ImageFilter.GaussianBlur(sigma))
    if jpeg:
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=quality)
        buf.seek(0)
        img = Image.open(buf)
    return np.asarray(img, dtype=np.uint8)


#: The square's eight symmetries as (quarter turns, left-right flip), in the order test-time views take
#: them (:data:`pcbsiam.config.VIEW_COUNTS`): 2 views add the mirror image, 4 the half turn and its mirror
#: (together: both flips), 8 the rest.
DIHEDRAL_VIEWS: tuple[tuple[int, bool], ...] = (
    (0, False),
    (0, True),
    (2, False),
    (2, True),
    (1, False),
    (1, True),
    (3, False),
    (3, True),
)


def dihedral_tensor(x: torch.Tensor, turns: int, flip: bool) -> torch.Tensor:
    """(..., S, S) windows rotated by ``turns`` quarter turns, then mirrored left-right if ``flip``
    (the tensor form of :func:`apply_dihedral`)."""
    turns %= 4  # torch.rot90 by flips and transposes, which ONNX export knows
    if turns == 1:
        x = x.flip(-1).transpose(-2, -1)
    elif turns == 2:
        x = x.flip(-2, -1)
    elif turns == 3:
        x = x.transpose(-2, -1).flip(-1)
    return x.flip(-1) if flip else x


def dihedral_boxes(boxes: torch.Tensor, turns: int, flip: bool) -> torch.Tensor:
    """(N, 4) unit-frame boxes ``x1 y1 x2 y2`` moved with their window by :func:`dihedral_tensor`."""
    b = boxes
    for _ in range(turns % 4):  # a quarter turn counter-clockwise: (x, y) -> (y, 1 - x)
        b = torch.stack([b[:, 1], 1 - b[:, 2], b[:, 3], 1 - b[:, 0]], dim=1)
    if flip:
        b = torch.stack([1 - b[:, 2], b[:, 1], 1 - b[:, 0], b[:, 3]], dim=1)
    return b


def undo_dihedral_moves(moves: torch.Tensor, turns: int, flip: bool) -> torch.Tensor:
    """(N, 4) corner moves predicted in a window seen through :func:`dihedral_tensor`, in the original
    window's frame (the box map is affine, so a move maps by its linear part)."""
    back = torch.zeros_like(moves)
    if flip:
        moves = dihedral_boxes(moves, 0, True) - dihedral_boxes(back, 0, True)
    for _ in range((-turns) % 4):
        moves = dihedral_boxes(moves, 1, False) - dihedral_boxes(back, 1, False)
    return moves
