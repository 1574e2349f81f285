"""Synthetic DeepPCB-like board pairs: a defect-free template and a tested image with annotated defects.

Boards are routed on a coarse grid so that separate conductors always keep a clearance: traces run in
the eight 45-degree directions, start and end on round/square pads or vias, may run off the image edge
like crops of a larger board, and share the board with bus fan-outs and chamfered copper areas. Copper is
white (255) on black (0), as in the binarised DeepPCB scans.

Defects (DeepPCB codes, see :data:`pcbsiam.data.defects.DEFECT_TYPES`) are painted into a copy of the
template, each inside its own loose box; boxes never overlap. The tested image is then shifted by a
small registration offset and receives a little noise on copper edges only.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from pcbsiam.data.defects import DEFECT_CODES
from pcbsiam.io import atomic_path, write_text
from pcbsiam.registration import shift_image

COPPER = 255
BACKGROUND = 0

#: Grid steps (d_row, d_col) for the eight directions, 45 degrees apart.
_DIRS: tuple[tuple[int, int], ...] = ((0, 1), (1, 1), (1, 0), (1, -1), (0, -1), (-1, -1), (-1, 0), (-1, 1))
_BLOCKED = -1  # reservation value: no conductor may use the node
_WINDOW = 32  # half-size of the local window a defect is drawn in
_DEFECT_SIZE = (6, 40)  # allowed largest side of a defect's changed pixels, as in DeepPCB
_BOX_GAP = 2  # minimum pixel gap between two defect boxes
_TRIES_PER_DEFECT = 25

Range = tuple[int, int]
FloatRange = tuple[float, float]
Box = tuple[int, int, int, int]
Node = tuple[int, int]  # grid (row, col)


@dataclass(frozen=True)
class SynthStyle:
    """Look of one synthetic PCB design. Lengths are pixels; ``(lo, hi)`` ranges are inclusive.

    Attributes:
        pitch: Routing grid spacing; every conductor sits on its own grid nodes.
        trace_width: Trace width range.
        pad_size: Pad diameter/side range for terminal pads.
        square_pad_prob: Probability that a pad is square rather than round.
        via_prob: Probability that a terminal is a via (ring with a hole) rather than a pad.
        via_size: Via outer diameter range.
        via_hole_ratio: Via hole diameter as a fraction of the outer diameter.
        density: Target fraction of grid nodes used or reserved by copper (about 0.65 at most).
        bus_prob: Probability that a new net is a bus of parallel traces from a row of pads.
        edge_start_prob: Probability that a new net enters from outside the image instead of a pad.
        bus_size: Number of traces in a bus.
        pours: Number of large copper areas.
        pour_nodes: Side of a copper area in grid nodes.
        run_length: Straight run between two 45-degree bends, in grid steps.
        max_trace_steps: Longest trace, in grid steps.
        clearance: Minimum copper-to-copper gap between separate conductors.
        max_shift: Largest registration offset of tested vs template, per axis.
        edge_noise: Fraction of copper-edge pixels flipped in the tested image.
        box_margin: Margin added around a defect's changed pixels to form its box, per side.
    """

    pitch: int = 22
    trace_width: Range = (5, 9)
    pad_size: Range = (16, 28)
    square_pad_prob: float = 0.4
    via_prob: float = 0.3
    via_size: Range = (16, 22)
    via_hole_ratio: FloatRange = (0.35, 0.5)
    density: float = 0.5
    bus_prob: float = 0.2
    edge_start_prob: float = 0.3
    bus_size: Range = (2, 5)
    pours: Range = (0, 2)
    pour_nodes: Range = (2, 5)
    run_length: Range = (2, 8)
    max_trace_steps: int = 40
    clearance: int = 4
    max_shift: int = 3
    edge_noise: float = 0.03
    box_margin: Range = (2, 6)

    def __post_init__(self) -> None:
        """Reject ranges that are reversed or geometry that breaks the clearance guarantee."""
        for name in (
            "trace_width",
            "pad_size",
            "via_size",
            "via_hole_ratio",
            "bus_size",
            "pours",
            "pour_nodes",
            "run_length",
            "box_margin",
        ):
            lo, hi = getattr(self, name)
            if lo > hi or lo < 0:
                raise ValueError(f"SynthStyle.{name} must be a range 0 <= lo <= hi, got {(lo, hi)}")
        if self.pitch < 12 or self.clearance < 1 or self.trace_width[0] < 2 or self.run_length[0] < 1:
            raise ValueError("SynthStyle needs pitch >= 12, clearance >= 1, trace width >= 2, run >= 1")
        if self.trace_width[1] > self.pitch / math.sqrt(2) - self.clearance:
            raise ValueError("SynthStyle.trace_width too wide for pitch: diagonal neighbours would touch")
        if max(self.pad_size[1], self.via_size[1]) > self.max_terminal_size():
            limit = self.max_terminal_size()
            raise ValueError(f"SynthStyle pads/vias larger than {limit} px break the clearance")
        probs = (self.square_pad_prob, self.via_prob, self.bus_prob, self.edge_start_prob, self.density)
        if not all(0.0 <= q <= 1.0 for q in probs):
            raise ValueError("SynthStyle probabilities and density must lie in [0, 1]")
        if self.max_shift < 0 or not 0.0 <= self.edge_noise <= 0.5:
            raise ValueError("SynthStyle needs max_shift >= 0 and 0 <= edge_noise <= 0.5")

    def max_terminal_size(self) -> int:
        """Largest pad/via that keeps ``clearance`` to conductors two grid nodes away."""
        return int(2 * (2 * self.pitch - self.trace_width[1] / 2 - self.clearance))


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


def style_for_group(group_index: int) -> SynthStyle:
    """Deterministic style of PCB design number ``group_index``; different groups look different.

    Args:
        group_index: Non-negative design number.

    Returns:
        A valid :class:`SynthStyle`, the same for the same index on every machine.
    """
    if group_index < 0:
        raise ValueError(f"group_index must be >= 0, got {group_index}")
    rng = np.random.default_rng([0x5C8, group_index])
    pitch = int(rng.integers(19, 29))
    clearance = int(rng.integers(3, 6))
    w_cap = int(pitch / math.sqrt(2) - clearance)
    w_lo = int(rng.integers(4, min(7, w_cap) + 1))
    w_hi = int(min(w_cap, w_lo + rng.integers(0, 5)))
    t_cap = int(2 * (2 * pitch - w_hi / 2 - clearance))
    pad_lo = int(max(w_hi + 4, round(pitch * rng.uniform(0.7, 1.1))))
    pad_hi = int(min(t_cap, pad_lo + rng.integers(2, 12)))
    via_lo = int(max(w_hi + 4, round(pitch * rng.uniform(0.7, 0.95))))
    via_hi = int(min(t_cap, via_lo + rng.integers(0, 7)))
    run_lo = int(rng.integers(1, 4))
    return SynthStyle(
        pitch=pitch,
        trace_width=(w_lo, w_hi),
        pad_size=(pad_lo, pad_hi),
        square_pad_prob=float(rng.uniform(0.0, 0.9)),
        via_prob=float(rng.uniform(0.05, 0.5)),
        via_size=(via_lo, via_hi),
        via_hole_ratio=(0.35, float(rng.uniform(0.4, 0.55))),
        density=float(rng.uniform(0.35, 0.6)),
        bus_prob=float(rng.uniform(0.0, 0.4)),
        edge_start_prob=float(rng.uniform(0.1, 0.5)),
        bus_size=(2, int(rng.integers(3, 7))),
        pours=(0, int(rng.integers(0, 4))),
        pour_nodes=(2, int(rng.integers(3, 7))),
        run_length=(run_lo, run_lo + int(rng.integers(3, 9))),
        max_trace_steps=int(rng.integers(20, 60)),
        clearance=clearance,
        max_shift=3,
        edge_noise=float(rng.uniform(0.01, 0.05)),
    )


# --------------------------------------------------------------------------- board layout


@dataclass
class _Segment:
    """Straight piece of a trace from (x0, y0) to (x1, y1), pixel coordinates."""

    x0: float
    y0: float
    x1: float
    y1: float
    width: int
    label: int


@dataclass
class _Board:
    """Rendered defect-free board: ``label`` (H, W) int32 conductor ids (0 background) and its traces."""

    label: np.ndarray
    segments: list[_Segment]


class _Router:
    """Grid router: places pads, vias, copper areas and 45-degree traces, then renders them.

    The grid has one ring of nodes outside the image on every side; a trace entering the ring leaves
    the image. ``occ`` holds the conductor using a node, ``resv`` the conductor a node is reserved for
    (around pads and copper areas) or ``_BLOCKED``.
    """

    def __init__(self, size: int, style: SynthStyle, rng: np.random.Generator) -> None:
        self.size, self.style, self.rng = size, style, rng
        p = style.pitch
        self.origin = int(rng.integers(p // 3, p - p // 3 + 1))  # pixel position of interior node 1
        self.n = (size - 1 - self.origin) // p + 1  # interior nodes per axis: indices 1..n
        self.occ = np.zeros((self.n + 2, self.n + 2), np.int32)
        self.resv = np.zeros_like(self.occ)
        self.diag: dict[tuple[int, int], bool] = {}  # grid cell -> orientation of the diagonal in it
        self.next_label = 1
        self.ops: list[tuple[str, tuple]] = []  # deferred drawing operations
        self.holes: list[tuple[float, float, float]] = []
        self.segments: list[_Segment] = []

    # -- grid helpers
    def xy(self, node: Node) -> tuple[float, float]:
        """Pixel (x, y) of grid node (row, col)."""
        p = self.style.pitch
        return self.origin + (node[1] - 1) * p, self.origin + (node[0] - 1) * p

    def interior(self, node: Node) -> bool:
        """True for nodes inside the image (not on the outer ring)."""
        return 1 <= node[0] <= self.n and 1 <= node[1] <= self.n

    def new_label(self) -> int:
        """Fresh conductor id."""
        self.next_label += 1
        return self.next_label - 1

    def block(self, node: Node) -> tuple[slice, slice]:
        """Index of the 3x3 node block around an interior node."""
        return slice(node[0] - 1, node[0] + 2), slice(node[1] - 1, node[1] + 2)

    def block_free(self, node: Node, label: int) -> bool:
        """True if no other conductor uses or reserves the 3x3 block around ``node``."""
        if not self.interior(node):
            return False
        blk = self.block(node)
        occ, resv = self.occ[blk], self.resv[blk]
        return bool(np.all((occ == 0) | (occ == label)) and np.all((resv == 0) | (resv == label)))

    def reserve(self, region: tuple[slice, slice], label: int) -> None:
        """Reserve nodes for ``label``; nodes already reserved for another conductor become blocked."""
        resv = self.resv[region]
        resv[(resv != 0) & (resv != label)] = _BLOCKED
        resv[resv == 0] = label

    def can_step(self, node: Node, d: int, label: int) -> bool:
        """True if the conductor ``label`` may route from ``node`` one step in direction ``d``."""
        di, dj = _DIRS[d]
        ni, nj = node[0] + di, node[1] + dj
        if not (0 <= ni <= self.n + 1 and 0 <= nj <= self.n + 1) or self.occ[ni, nj] != 0:
            return False
        if self.resv[ni, nj] not in (0, label):
            return False
        if di and dj:
            cell = (min(node[0], ni), min(node[1], nj))
            if self.diag.get(cell, di * dj > 0) != (di * dj > 0):
                return False  # would cross the other diagonal of this cell
        return True

    def step(self, node: Node, d: int, label: int) -> Node:
        """Occupy the next node in direction ``d`` and return it."""
        di, dj = _DIRS[d]
        nxt = (node[0] + di, node[1] + dj)
        self.occ[nxt] = label
        if di and dj:
            self.diag[(min(node[0], nxt[0]), min(node[1], nxt[1]))] = di * dj > 0
        return nxt

    def occupied_fraction(self) -> float:
        """Fraction of interior nodes used or reserved."""
        inner = np.s_[1:-1, 1:-1]
        return float(np.mean((self.occ[inner] != 0) | (self.resv[inner] != 0)))

    # -- features
    def terminal(self, node: Node, label: int, max_size: int | None = None) -> None:
        """Place a pad or via on ``node`` and reserve its 3x3 block."""
        st, rng = self.style, self.rng
        self.occ[node] = label
        self.reserve(self.block(node), label)
        x, y = self.xy(node)
        if rng.random() < st.via_prob:
            d = float(rng.integers(st.via_size[0], st.via_size[1] + 1))
            d = min(d, max_size) if max_size else d
            self.ops.append(("ellipse", ((x - d / 2, y - d / 2, x + d / 2, y + d / 2), label)))
            self.holes.append((x, y, d / 2 * rng.uniform(*st.via_hole_ratio)))
            return
        s = float(rng.integers(st.pad_size[0], st.pad_size[1] + 1))
        s = min(s, max_size) if max_size else s
        kind = "rectangle" if rng.random() < st.square_pad_prob else "ellipse"
        self.ops.append((kind, ((x - s / 2, y - s / 2, x + s / 2 - 1, y + s / 2 - 1), label)))

    def run(self) -> int:
        """Random straight run length in grid steps."""
        return int(self.rng.integers(self.style.run_length[0], self.style.run_length[1] + 1))

    def cap(self, x: float, y: float, width: float, label: int) -> None:
        """Queue a round cap/joint of diameter ``width`` at (x, y)."""
        self.ops.append(("ellipse", ((x - width / 2, y - width / 2, x + width / 2, y + width / 2), label)))

    def walk(self, start: Node, d: int, label: int, first_run: int | None = None) -> list[Node]:
        """Route a trace from ``start``; returns its node path (at least ``[start]``)."""
        st, rng = self.style, self.rng
        path = [start]
        run_left = first_run if first_run is not None else self.run()
        for _ in range(st.max_trace_steps):
            if run_left <= 0:
                d = (d + (1 if rng.random() < 0.5 else -1)) % 8
                run_left = self.run()
            turn = 1 if rng.random() < 0.5 else -1
            options = [d, (d + turn) % 8, (d - turn) % 8]
            d_next = next((c for c in options if self.can_step(path[-1], c, label)), None)
            if d_next is None:
                break
            if d_next != d:
                run_left = self.run()
            d = d_next
            path.append(self.step(path[-1], d, label))
            run_left -= 1
            if not self.interior(path[-1]):
                break
        return path

    def trace(self, path: list[Node], width: int, label: int) -> None:
        """Queue the drawing of a node path as a trace of ``width`` and record its straight segments."""
        if len(path) < 2:
            return
        pts = [self.xy(n) for n in path]
        corners = [pts[0]]
        for a, b, c in zip(pts, pts[1:], pts[2:], strict=False):
            if (b[0] - a[0], b[1] - a[1]) != (c[0] - b[0], c[1] - b[1]):
                corners.append(b)
        corners.append(pts[-1])
        for a, b in zip(corners, corners[1:], strict=False):
            self.segments.append(_Segment(a[0], a[1], b[0], b[1], width, label))
            self.ops.append(("line", ((a, b), label, width)))
        for x, y in corners[1:-1]:  # round joints at the 45-degree bends
            self.cap(x, y, width, label)

    def end(self, path: list[Node], width: int, label: int) -> None:
        """Finish a trace: pad/via if there is room, a round cap otherwise, nothing when it left the image."""
        last = path[-1]
        if not self.interior(last) or len(path) < 2:
            return
        if self.rng.random() < 0.85 and self.block_free(last, label):
            self.terminal(last, label)
            return
        self.cap(*self.xy(last), width, label)

    def width(self) -> int:
        """Random trace width."""
        return int(self.rng.integers(self.style.trace_width[0], self.style.trace_width[1] + 1))

    def random_node(self) -> Node:
        """Random interior node."""
        return int(self.rng.integers(1, self.n + 1)), int(self.rng.integers(1, self.n + 1))

    def add_net(self) -> None:
        """Pad/via or the image edge, 45-degree trace, pad/via or the image edge."""
        if self.rng.random() < self.style.edge_start_prob:
            self.add_edge_net()
            return
        start = self.random_node()
        if not self.block_free(start, 0):
            return
        label = self.new_label()
        self.terminal(start, label)
        w = self.width()
        path = self.walk(start, int(self.rng.integers(0, 8)), label)
        self.trace(path, w, label)
        self.end(path, w, label)

    def add_edge_net(self) -> None:
        """Trace entering from outside the image, as on a crop of a larger board."""
        rng, last = self.rng, self.n + 1
        k = int(rng.integers(1, self.n + 1))
        start, inward = (((0, k), 2), ((last, k), 6), ((k, 0), 0), ((k, last), 4))[int(rng.integers(0, 4))]
        if self.occ[start] != 0 or self.resv[start] != 0:
            return
        label = self.new_label()
        self.occ[start] = label
        d = (inward + int(rng.integers(-1, 2))) % 8
        path = self.walk(start, d, label)
        w = self.width()
        self.trace(path, w, label)
        self.end(path, w, label)

    def add_bus(self) -> None:
        """Row of small pads two nodes apart with parallel traces leaving them side by side."""
        st, rng = self.style, self.rng
        d = int(rng.integers(0, 4)) * 2
        perp = _DIRS[(d + 2) % 8]
        k = int(rng.integers(st.bus_size[0], st.bus_size[1] + 1))
        s = self.random_node()
        starts = [(s[0] + 2 * m * perp[0], s[1] + 2 * m * perp[1]) for m in range(k)]
        if len(starts) < 2 or not all(self.block_free(n, 0) for n in starts):
            return
        w = self.width()
        small = int(min(st.pad_size[1], 2 * st.pitch - st.clearance - 2))
        run = int(rng.integers(st.run_length[0], st.run_length[1] + 3))
        labels = [self.new_label() for _ in starts]
        for node, label in zip(starts, labels, strict=True):
            self.terminal(node, label, max_size=small)
        for node, label in zip(starts, labels, strict=True):
            path = self.walk(node, d, label, first_run=run)
            self.trace(path, w, label)
            self.end(path, w, label)

    def add_pour(self) -> None:
        """Chamfered copper area over a block of nodes, with a reserved ring and a few traces leaving it."""
        st, rng = self.style, self.rng
        h, w = (int(rng.integers(st.pour_nodes[0], st.pour_nodes[1] + 1)) for _ in range(2))
        i0, j0 = self.random_node()
        i1, j1 = i0 + h - 1, j0 + w - 1
        if i1 > self.n or j1 > self.n:
            return
        ring = np.s_[i0 - 1 : i1 + 2, j0 - 1 : j1 + 2]
        if np.any(self.occ[ring] != 0) or np.any(self.resv[ring] != 0):
            return
        label = self.new_label()
        self.occ[i0 : i1 + 1, j0 : j1 + 1] = label
        self.reserve(ring, label)
        (x0, y0), (x1, y1) = self.xy((i0, j0)), self.xy((i1, j1))
        e = 0.6 * st.pitch
        x0, y0, x1, y1 = x0 - e, y0 - e, x1 + e, y1 + e
        c = rng.uniform(0.0, 0.45) * min(x1 - x0, y1 - y0)
        poly = [
            (x0 + c, y0),
            (x1 - c, y0),
            (x1, y0 + c),
            (x1, y1 - c),
            (x1 - c, y1),
            (x0 + c, y1),
            (x0, y1 - c),
            (x0, y0 + c),
        ]
        self.ops.append(("polygon", (poly, label)))
        for _ in range(int(rng.integers(0, 4))):
            node = (int(rng.integers(i0, i1 + 1)), int(rng.integers(j0, j1 + 1)))
            d = int(rng.integers(0, 4)) * 2
            tw = self.width()
            path = self.walk(node, d, label)
            self.trace(path, tw, label)
            self.end(path, tw, label)

    def render(self) -> _Board:
        """Draw all queued features into an (H, W) int32 conductor-id image."""
        img = Image.new("I", (self.size, self.size), 0)
        draw = ImageDraw.Draw(img)
        for kind, args in self.ops:
            if kind == "line":
                draw.line(args[0], fill=args[1], width=args[2])
            elif kind == "polygon":
                draw.polygon(args[0], fill=args[1])
            else:
                getattr(draw, kind)(args[0], fill=args[1])
        for x, y, r in self.holes:
            draw.ellipse((x - r, y - r, x + r, y + r), fill=0)
        return _Board(label=np.asarray(img, dtype=np.int32), segments=self.segments)


def _layout_board(size: int, style: SynthStyle, rng: np.random.Generator) -> _Board:
    """Route and render a defect-free board of (size, size) pixels."""
    router = _Router(size, style, rng)
    for _ in range(int(rng.integers(style.pours[0], style.pours[1] + 1))):
        router.add_pour()
    for _ in range(40 + router.n * router.n):
        if router.occupied_fraction() >= style.density:
            break
        if rng.random() < style.bus_prob:
            router.add_bus()
        else:
            router.add_net()
    return router.render()


# --------------------------------------------------------------------------- defects


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
    board: _Board
    rng: np.random.Generator
    style: SynthStyle
    seg_cdf: np.ndarray  # cumulative segment lengths, for length-weighted sampling
    copper_idx: np.ndarray  # flat indices of template copper pixels
    end_gap: float  # distance from segment ends (pads, vias, copper areas, bends) a trace defect keeps

    def window(self, cx: float, cy: float) -> tuple[int, int, int, int] | None:
        """Window (x0, y0, x1, y1) of half-size ``_WINDOW`` around a point, or None if it leaves the image."""
        x0, y0 = int(round(cx)) - _WINDOW, int(round(cy)) - _WINDOW
        h, w = self.work.shape
        if x0 < 0 or y0 < 0 or x0 + 2 * _WINDOW + 1 > w or y0 + 2 * _WINDOW + 1 > h:
            return None
        return x0, y0, x0 + 2 * _WINDOW + 1, y0 + 2 * _WINDOW + 1


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


def _on_trace(ctx: _Ctx) -> tuple[np.ndarray, np.ndarray, np.ndarray, _Segment] | None:
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


def _trace_site(ctx: _Ctx) -> tuple[np.ndarray, np.ndarray, np.ndarray, _Segment, tuple] | None:
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
    mid = _WINDOW
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
    mid = float(_WINDOW)
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


def _inject_defects(
    template: np.ndarray, board: _Board, n: int, rng: np.random.Generator, style: SynthStyle
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


# --------------------------------------------------------------------------- registration and noise


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
    if size < 4 * _WINDOW:
        raise ValueError(f"size must be >= {4 * _WINDOW}, got {size}")
    if not 0 <= n_defects[0] <= n_defects[1]:
        raise ValueError(f"n_defects must be a range 0 <= lo <= hi, got {n_defects}")
    board = _layout_board(size, style, rng)
    template = np.where(board.label > 0, COPPER, BACKGROUND).astype(np.uint8)
    n = int(rng.integers(n_defects[0], n_defects[1] + 1))
    damaged, boxes = _inject_defects(template, board, n, rng, style)
    dy, dx = (int(v) for v in rng.integers(-style.max_shift, style.max_shift + 1, 2))
    clean = shift_image(damaged, dy, dx, fill=BACKGROUND)
    boxes[:, [0, 2]] = np.clip(boxes[:, [0, 2]] + dx, 0, size)
    boxes[:, [1, 3]] = np.clip(boxes[:, [1, 3]] + dy, 0, size)
    tested = _edge_noise(clean, style.edge_noise, rng)
    return SyntheticPair(template=template, tested=tested, boxes=boxes, shift=(dy, dx), tested_clean=clean)


def group_id(group_index: int) -> int:
    """Five-digit DeepPCB-style group id of design ``group_index``: 10000, 11000, ..."""
    if not 0 <= group_index < 90:
        raise ValueError(f"group_index must be in 0..89, got {group_index}")
    return 10000 + 1000 * group_index


def _save_jpeg(path: Path, img: np.ndarray, dark_copper: bool = True) -> None:
    """Write (H, W) uint8 ``img`` atomically as a greyscale JPEG, quality 95.

    With ``dark_copper`` the image is inverted on the way out, so that files look like DeepPCB's
    (dark conductors on a light background) while arrays in memory keep copper = 255.
    """
    with atomic_path(path) as tmp:
        Image.fromarray(255 - img if dark_copper else img).convert("L").save(tmp, format="JPEG", quality=95)


def write_dataset(
    out: Path,
    boards: int,
    seed: int,
    size: int = 640,
    groups: int = 4,
    split_name: str = "trainval.txt",
    progress: Callable[[int, int], None] | None = None,
    dark_copper: bool = True,
) -> Path:
    """Write a synthetic dataset in the DeepPCB directory layout.

    Board ``b`` goes to group ``b % groups`` (style :func:`style_for_group`) as index ``b // groups``:
    ``out/PCBData/group<G>/<G>/<name>_test.jpg`` and ``<name>_temp.jpg``, annotations
    ``out/PCBData/group<G>/<G>_not/<name>.txt`` (``x1 y1 x2 y2 type`` per line) and the split file
    ``out/PCBData/<split_name>`` listing ``group<G>/<G>/<name>.jpg group<G>/<G>_not/<name>.txt``.
    The same ``seed`` gives byte-identical files.

    Args:
        out: Dataset root directory.
        boards: Number of board pairs.
        seed: Random seed.
        size: Image side in pixels.
        groups: Number of PCB designs (1..90).
        split_name: File name of the split list.
        progress: Called as ``progress(done, total)`` after each board.
        dark_copper: write conductors dark on a light background, as DeepPCB's files are.

    Returns:
        Path of the split file.
    """
    if boards < 0 or not 1 <= groups <= 90:
        raise ValueError(f"need boards >= 0 and 1 <= groups <= 90, got {boards}, {groups}")
    if boards > 1000 * groups:
        raise ValueError(f"at most 1000 boards per group ({1000 * groups} for {groups} groups)")
    root = Path(out) / "PCBData"
    styles = [style_for_group(g) for g in range(groups)]
    lines = []
    for b, child in enumerate(np.random.SeedSequence(seed).spawn(boards)):
        g, index = b % groups, b // groups
        gid = group_id(g)
        name = f"{gid:05d}{index:03d}"
        pair = generate_pair(np.random.default_rng(child), size=size, style=styles[g])
        img_dir, ann_dir = root / f"group{gid}" / f"{gid}", root / f"group{gid}" / f"{gid}_not"
        _save_jpeg(img_dir / f"{name}_test.jpg", pair.tested, dark_copper)
        _save_jpeg(img_dir / f"{name}_temp.jpg", pair.template, dark_copper)
        rows = "".join(" ".join(map(str, r)) + "\n" for r in pair.boxes.tolist())
        write_text(ann_dir / f"{name}.txt", rows)
        lines.append(f"group{gid}/{gid}/{name}.jpg group{gid}/{gid}_not/{name}.txt\n")
        if progress is not None:
            progress(b + 1, boards)
    split = root / split_name
    write_text(split, "".join(lines))
    return split
