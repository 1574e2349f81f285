"""Board layout: a grid router that places pads, vias, copper areas and 45-degree traces, and renders them."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from pcbsiam.data.synth.style import SynthStyle

#: Grid steps (d_row, d_col) for the eight directions, 45 degrees apart.
_DIRS: tuple[tuple[int, int], ...] = ((0, 1), (1, 1), (1, 0), (1, -1), (0, -1), (-1, -1), (-1, 0), (-1, 1))
_BLOCKED = -1  # reservation value: no conductor may use the node
Node = tuple[int, int]  # grid (row, col)


@dataclass
class Segment:
    """Straight piece of a trace from (x0, y0) to (x1, y1), pixel coordinates."""

    x0: float
    y0: float
    x1: float
    y1: float
    width: int
    label: int


@dataclass
class Board:
    """Rendered defect-free board: ``label`` (H, W) int32 conductor ids (0 background) and its traces."""

    label: np.ndarray
    segments: list[Segment]


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
        self.segments: list[Segment] = []

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
            self.segments.append(Segment(a[0], a[1], b[0], b[1], width, label))
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

    def render(self) -> Board:
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
        return Board(label=np.asarray(img, dtype=np.int32), segments=self.segments)


def layout_board(size: int, style: SynthStyle, rng: np.random.Generator) -> Board:
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
