"""One template/tested pair in memory: layout, defects, registration shift and copper-edge noise."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from pcbsiam.data.registration import shift_image
from pcbsiam.data.synth.inject import WINDOW, inject_defects
from pcbsiam.data.synth.layout import layout_board
from pcbsiam.data.synth.style import BACKGROUND, COPPER, SynthStyle


@dataclass(eq=False)
class SyntheticPair:
    """One synthetic template/tested pair.

    Attributes:
        template: (H, W) uint8 defect-free board, copper 255 on background 0.
        tested: (H, W) uint8 board with defects, shifted by ``shift`` and with edge noise.
        boxes: (N, 5) int64 rows ``x1 y1 x2 y2 type`` in tested-image pixels, half-open
            (``x1 <= x < x2``); ``type`` is a DeepPCB code 1..6.
        shift: (dy, dx) of the tested image vs the template: ``tested[y + dy, x + dx] ~ template[y, x]``.
        tested_clean: (H, W) uint8 tested image before edge noise (defects and shift only).
    """

    template: np.ndarray
    tested: np.ndarray
    boxes: np.ndarray
    shift: tuple[int, int]
    tested_clean: np.ndarray | None = field(default=None, repr=False)


def copper_edges(img: np.ndarray) -> np.ndarray:
    """(H, W) bool: pixels with a 4-neighbour on the other side of the copper/background threshold."""
    cu = img > 127
    edge = np.zeros_like(cu)
    dv, dh = cu[1:] != cu[:-1], cu[:, 1:] != cu[:, :-1]
    edge[1:] |= dv
    edge[:-1] |= dv
    edge[:, 1:] |= dh
    edge[:, :-1] |= dh
    return edge


def _edge_noise(img: np.ndarray, rate: float, rng: np.random.Generator) -> np.ndarray:
    """Flip a fraction ``rate`` of copper-edge pixels of (H, W) uint8 ``img``; nothing away from edges."""
    idx = np.flatnonzero(copper_edges(img))
    k = int(rng.binomial(len(idx), rate)) if len(idx) else 0
    out = img.copy().ravel()
    flip = rng.choice(idx, size=k, replace=False) if k else np.empty(0, np.int64)
    out[flip] = np.where(out[flip] > 127, BACKGROUND, COPPER)
    return out.reshape(img.shape)


# --------------------------------------------------------------------------- public API


def generate_pair(
    rng: np.random.Generator, size: int = 640, n_defects: tuple[int, int] = (3, 12), style: SynthStyle | None = None
) -> SyntheticPair:
    """Generate one synthetic board pair.

    Args:
        rng: Source of randomness; the result depends only on its state.
        size: Side of the square images in pixels (DeepPCB: 640).
        n_defects: Inclusive range of the number of defects; fewer are placed if a small or crowded
            board has no room.
        style: Board design; :class:`SynthStyle` defaults when None.

    Returns:
        A :class:`SyntheticPair` with (size, size) uint8 images and (N, 5) int64 boxes.
    """
    style = style or SynthStyle()
    if size < 4 * WINDOW:
        raise ValueError(f"size must be >= {4 * WINDOW}, got {size}")
    if not 0 <= n_defects[0] <= n_defects[1]:
        raise ValueError(f"n_defects must be a range 0 <= lo <= hi, got {n_defects}")
    board = layout_board(size, style, rng)
    template = np.where(board.label > 0, COPPER, BACKGROUND).astype(np.uint8)
    n = int(rng.integers(n_defects[0], n_defects[1] + 1))
    damaged, boxes = inject_defects(template, board, n, rng, style)
    dy, dx = (int(v) for v in rng.integers(-style.max_shift, style.max_shift + 1, 2))
    clean = shift_image(damaged, dy, dx, fill=BACKGROUND)
    boxes[:, [0, 2]] = np.clip(boxes[:, [0, 2]] + dx, 0, size)
    boxes[:, [1, 3]] = np.clip(boxes[:, [1, 3]] + dy, 0, size)
    tested = _edge_noise(clean, style.edge_noise, rng)
    return SyntheticPair(template=template, tested=tested, boxes=boxes, shift=(dy, dx), tested_clean=clean)
