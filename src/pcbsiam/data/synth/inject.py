"""Defect injection: paints non-overlapping DeepPCB defects, each with its loose box, into a board."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from pcbsiam.data.defects import DEFECT_CODES
from pcbsiam.data.synth.layout import Board, Segment
from pcbsiam.data.synth.style import BACKGROUND, COPPER, SynthStyle

WINDOW = 32  # half-size of the local window a defect is drawn in
_DEFECT_SIZE = (6, 40)  # allowed largest side of a defect's changed pixels, as in DeepPCB
_BOX_GAP = 2  # minimum pixel gap between two defect boxes
_TRIES_PER_DEFECT = 25

Box = tuple[int, int, int, int]


@dataclass
class _Edit:
    """Set ``mask`` pixels of the window at (x0, y0) to ``value``; ``mask`` is (h, w) bool."""

    x0: int
    y0: int
    mask: np.ndarray
    value: int


@dataclass
class _Ctx:
    """State shared by the defect painters while one board is being damaged."""

    work: np.ndarray  # (H, W) uint8 board being damaged
    board: Board
    rng: np.random.Generator
    style: SynthStyle
    seg_cdf: np.ndarray  # cumulative segment lengths, for length-weighted sampling
    copper_idx: np.ndarray  # flat indices of template copper pixels
    end_gap: float  # distance from segment ends (pads, vias, copper areas, bends) a trace defect keeps

    def window(self, cx: float, cy: float) -> tuple[int, int, int, int] | None:
        """Window (x0, y0, x1, y1) of half-size ``WINDOW`` around a point, or None if it leaves the image."""
        x0, y0 = int(round(cx)) - WINDOW, int(round(cy)) - WINDOW
        h, w = self.work.shape
        if x0 < 0 or y0 < 0 or x0 + 2 * WINDOW + 1 > w or y0 + 2 * WINDOW + 1 > h:
            return None
        return x0, y0, x0 + 2 * WINDOW + 1, y0 + 2 * WINDOW + 1


def _draw_mask(shape: tuple[int, int], paint: Callable[[ImageDraw.ImageDraw], None]) -> np.ndarray:
    """Render ``paint`` onto an empty image and return the (h, w) bool mask of painted pixels."""
    img = Image.new("L", (shape[1], shape[0]), 0)
    paint(ImageDraw.Draw(img))
    return np.asarray(img) > 0


def _strip(a: np.ndarray, b: np.ndarray, wa: float, wb: float) -> list[tuple[float, float]]:
    """Quadrilateral from point ``a`` (width ``wa``) to point ``b`` (width ``wb``)."""
    v = b - a
    n = np.array([-v[1], v[0]]) / max(float(np.hypot(*v)), 1e-9)
    return [tuple(a + n * wa / 2), tuple(b + n * wb / 2), tuple(b - n * wb / 2), tuple(a - n * wa / 2)]


def _on_trace(ctx: _Ctx) -> tuple[np.ndarray, np.ndarray, np.ndarray, Segment] | None:
    """Random point on a trace at least ``ctx.end_gap`` from its segment ends.

    Returns:
        (point, unit direction, unit normal with random side, segment), each vector shape (2,); or None.
    """
    if not len(ctx.seg_cdf):
        return None
    k = int(np.searchsorted(ctx.seg_cdf, ctx.rng.random() * ctx.seg_cdf[-1], side="right"))
    seg = ctx.board.segments[min(k, len(ctx.board.segments) - 1)]
    a, b = np.array([seg.x0, seg.y0]), np.array([seg.x1, seg.y1])
    length = float(np.hypot(*(b - a)))
    if length < 2 * ctx.end_gap + 1:
        return None
    u = (b - a) / length
    side = 1.0 if ctx.rng.random() < 0.5 else -1.0
    point = a + u * ctx.rng.uniform(ctx.end_gap, length - ctx.end_gap)
    return point, u, side * np.array([-u[1], u[0]]), seg


def _trace_site(ctx: _Ctx) -> tuple[np.ndarray, np.ndarray, np.ndarray, Segment, tuple] | None:
    """A point on a trace (with its direction, side normal and segment) and the edit window around it."""
    hit = _on_trace(ctx)
    if hit is None:
        return None
    win = ctx.window(*hit[0])
    return None if win is None else (*hit, win)


def _open(ctx: _Ctx) -> _Edit | None:
    """Cut a trace across its full width."""
    site = _trace_site(ctx)
    if site is None:
        return None
    c, u, n, seg, win = site
    o = np.array(win[:2], float)
    gap = ctx.rng.uniform(3.0, 10.0)
    skew = ctx.rng.uniform(-gap / 2, gap / 2)
    a = seg.width / 2 + 2.5
    corners = ((-1, -1), (1, -1), (1, 1), (-1, 1))
    pts = [tuple(c - o + (s * gap / 2 + t * skew) * u + t * a * n) for s, t in corners]
    cut = _draw_mask((win[3] - win[1], win[2] - win[0]), lambda d: d.polygon(pts, fill=1))
    own = ctx.board.label[win[1] : win[3], win[0] : win[2]] == seg.label
    return _Edit(win[0], win[1], cut & own, BACKGROUND)


def _mousebite(ctx: _Ctx) -> _Edit | None:
    """Bite one to three round notches out of a trace edge."""
    site = _trace_site(ctx)
    if site is None:
        return None
    c, u, n, seg, win = site
    o = np.array(win[:2], float)
    r = ctx.rng.uniform(2.0, max(2.0, min(5.0, seg.width / 2)))
    k = int(ctx.rng.integers(1, 4))
    centres = [c - o + (m - (k - 1) / 2) * 1.6 * r * u + (seg.width / 2 + 0.3 * r) * n for m in range(k)]

    def paint(d: ImageDraw.ImageDraw) -> None:
        for x, y in centres:
            rr = r * ctx.rng.uniform(0.8, 1.1)
            d.ellipse((x - rr, y - rr, x + rr, y + rr), fill=1)

    bites = _draw_mask((win[3] - win[1], win[2] - win[0]), paint)
    own = ctx.board.label[win[1] : win[3], win[0] : win[2]] == seg.label
    return _Edit(win[0], win[1], bites & own, BACKGROUND)


def _clear_of(label: np.ndarray, mask: np.ndarray, allowed: tuple[int, ...]) -> bool:
    """True if ``mask`` covers only conductors in ``allowed`` (and background)."""
    return bool(np.all(np.isin(label[mask], (0, *allowed))))


def _spur(ctx: _Ctx) -> _Edit | None:
    """Thin tapered protrusion from a trace edge that stays clear of other conductors."""
    site = _trace_site(ctx)
    if site is None:
        return None
    c, u, n, seg, win = site
    rng, clr = ctx.rng, ctx.style.clearance
    ang = rng.uniform(-0.7, 0.7)
    v = n * math.cos(ang) + u * math.sin(ang)
    start = c - np.array(win[:2], float) + (seg.width / 2 - 1) * n
    length, base = rng.uniform(6.0, 16.0), rng.uniform(2.0, 5.0)
    shape = (win[3] - win[1], win[2] - win[0])
    spur = _draw_mask(shape, lambda d: d.polygon(_strip(start, start + v * length, base, 1.0), fill=1))
    keep = _draw_mask(
        shape, lambda d: d.polygon(_strip(start, start + v * (length + clr), base + 2 * clr, 1.0 + 2 * clr), fill=1)
    )
    label = ctx.board.label[win[1] : win[3], win[0] : win[2]]
    if not _clear_of(label, keep, (seg.label,)):
        return None
    return _Edit(win[0], win[1], spur, COPPER)


def _short(ctx: _Ctx) -> _Edit | None:
    """Copper bridge from a trace to the nearest separate conductor across the gap."""
    site = _trace_site(ctx)
    if site is None:
        return None
    c, u, n, seg, win = site
    label = ctx.board.label[win[1] : win[3], win[0] : win[2]]
    local = c - np.array(win[:2], float)
    other, reach = 0, 0.0
    for t in np.arange(seg.width / 2 + 1, seg.width / 2 + 26):
        x, y = np.round(local + t * n).astype(int)
        if not (0 <= x < label.shape[1] and 0 <= y < label.shape[0]):
            return None
        if label[y, x] == seg.label:
            return None  # own copper first: not a gap to another conductor
        if label[y, x] != 0:
            other, reach = int(label[y, x]), float(t)
            break
    if not other:
        return None
    rng = ctx.rng
    wide = rng.uniform(2.0, 7.0)
    a = local + (seg.width / 2 - 1) * n
    b = local + (reach + 2) * n + rng.uniform(-3.0, 3.0) * u
    shape = label.shape
    bridge = _draw_mask(shape, lambda d: d.polygon(_strip(a, b, wide, wide), fill=1))
    keep = _draw_mask(
        shape, lambda d: d.polygon(_strip(a, b, wide + 2 * ctx.style.clearance, wide + 2 * ctx.style.clearance), fill=1)
    )
    if not _clear_of(label, keep, (seg.label, other)) or not np.any(bridge & (label == other)):
        return None
    return _Edit(win[0], win[1], bridge, COPPER)


def _spurious_copper(ctx: _Ctx) -> _Edit | None:
    """Isolated irregular copper blob in empty space."""
    rng = ctx.rng
    h, w = ctx.work.shape
    win = ctx.window(rng.uniform(0, w), rng.uniform(0, h))
    if win is None:
        return None
    r = rng.uniform(3.0, 10.0)
    clear = int(math.ceil(1.3 * r + ctx.style.clearance + 1))
    mid = WINDOW
    patch = ctx.work[win[1] : win[3], win[0] : win[2]]
    if np.any(patch[mid - clear : mid + clear + 1, mid - clear : mid + clear + 1]):
        return None
    m = int(rng.integers(5, 9))
    angles = (np.arange(m) + rng.uniform(-0.3, 0.3, m)) * (2 * np.pi / m) + rng.uniform(0, 2 * np.pi)
    radii = r * rng.uniform(0.7, 1.3, m)
    pts = [(mid + q * math.cos(t), mid + q * math.sin(t)) for q, t in zip(radii, angles, strict=True)]
    blob = _draw_mask(patch.shape, lambda d: d.polygon(pts, fill=1))
    return _Edit(win[0], win[1], blob, COPPER)


def _pin_hole(ctx: _Ctx) -> _Edit | None:
    """Small hole well inside copper (pad, copper area or wide trace)."""
    rng = ctx.rng
    if not len(ctx.copper_idx):
        return None
    y, x = divmod(int(ctx.copper_idx[rng.integers(0, len(ctx.copper_idx))]), ctx.work.shape[1])
    win = ctx.window(x, y)
    if win is None:
        return None
    r = rng.uniform(3.0, 6.0)
    ry = r * rng.uniform(0.75, 1.0)
    mid = float(WINDOW)
    patch = ctx.work[win[1] : win[3], win[0] : win[2]]
    q = r + 2
    ring = _draw_mask(patch.shape, lambda d: d.ellipse((mid - q, mid - q, mid + q, mid + q), fill=1))
    if not np.all(patch[ring]):
        return None
    hole = _draw_mask(patch.shape, lambda d: d.ellipse((mid - r, mid - ry, mid + r, mid + ry), fill=1))
    return _Edit(win[0], win[1], hole, BACKGROUND)


_PAINTERS: dict[int, Callable[[_Ctx], _Edit | None]] = {
    DEFECT_CODES["open"]: _open,
    DEFECT_CODES["short"]: _short,
    DEFECT_CODES["mousebite"]: _mousebite,
    DEFECT_CODES["spur"]: _spur,
    DEFECT_CODES["spurious_copper"]: _spurious_copper,
    DEFECT_CODES["pin_hole"]: _pin_hole,
}


def _near(a: Box, b: Box, gap: int) -> bool:
    """True if half-open boxes ``a`` and ``b`` overlap or are closer than ``gap`` pixels."""
    return a[0] < b[2] + gap and b[0] < a[2] + gap and a[1] < b[3] + gap and b[1] < a[3] + gap


def _commit(ctx: _Ctx, edit: _Edit, taken: list[Box]) -> Box | None:
    """Apply ``edit`` if its changed pixels have a DeepPCB-sized extent and a box clear of ``taken``.

    Returns:
        The loose box (x1, y1, x2, y2), half-open, in template coordinates; None if rejected.
    """
    h, w = edit.mask.shape
    patch = ctx.work[edit.y0 : edit.y0 + h, edit.x0 : edit.x0 + w]
    changed = edit.mask & (patch != edit.value)
    ys, xs = np.nonzero(changed)
    if not len(ys):
        return None
    ext_w, ext_h = int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)
    if not _DEFECT_SIZE[0] <= max(ext_w, ext_h) <= _DEFECT_SIZE[1]:
        return None
    lo, hi = ctx.style.box_margin
    m = ctx.rng.integers(lo, hi + 1, 4)
    box = (
        edit.x0 + int(xs.min()) - int(m[0]),
        edit.y0 + int(ys.min()) - int(m[1]),
        edit.x0 + int(xs.max()) + 1 + int(m[2]),
        edit.y0 + int(ys.max()) + 1 + int(m[3]),
    )
    s = ctx.style.max_shift
    size_y, size_x = ctx.work.shape
    if box[0] < s or box[1] < s or box[2] > size_x - s or box[3] > size_y - s:
        return None  # keep the whole box inside the image after the registration shift
    if any(_near(box, t, _BOX_GAP) for t in taken):
        return None
    patch[changed] = edit.value
    return box


def inject_defects(
    template: np.ndarray, board: Board, n: int, rng: np.random.Generator, style: SynthStyle
) -> tuple[np.ndarray, np.ndarray]:
    """Paint up to ``n`` non-overlapping defects into a copy of ``template`` (H, W) uint8.

    Returns:
        (damaged image (H, W) uint8, boxes (N, 5) int64 ``x1 y1 x2 y2 type`` in template coordinates).
    """
    lengths = [math.hypot(s.x1 - s.x0, s.y1 - s.y0) for s in board.segments]
    reach = max(style.pad_size[1] / 2, style.via_size[1] / 2, 0.6 * style.pitch * math.sqrt(2))
    ctx = _Ctx(
        template.copy(),
        board,
        rng,
        style,
        np.cumsum(lengths),
        np.flatnonzero(template.ravel()),
        end_gap=reach + style.trace_width[1] / 2 + 12,
    )
    codes = sorted(_PAINTERS)
    rows: list[tuple[int, int, int, int, int]] = []
    for _ in range(n):
        for code in rng.permutation(codes):
            box = None
            for _ in range(_TRIES_PER_DEFECT):
                edit = _PAINTERS[int(code)](ctx)
                box = None if edit is None else _commit(ctx, edit, [r[:4] for r in rows])
                if box is not None:
                    break
            if box is not None:
                rows.append((*box, int(code)))
                break
    return ctx.work, np.array(rows, dtype=np.int64).reshape(-1, 5)
