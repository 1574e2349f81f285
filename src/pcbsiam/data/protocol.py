"""The DeepPCB-Cls patch protocol (docs/deeppcb-cls.md): boards cut into labelled patches.

A patch is defective when some box has at least ``min_fraction`` of its area inside it, defect-free
when no box touches it, and left out in between. Its reference is the reference crop at the same
coordinates; its defect type is that of the box with the largest overlap fraction (first in file
order on a tie); its PCB type is the item's group.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

from pcbsiam.data.defects import defect_name
from pcbsiam.data.records import BoardPair

PATCH_FIELDS = [
    ("board", np.int32),
    ("y", np.int32),
    ("x", np.int32),
    ("h", np.int32),
    ("w", np.int32),
    ("label", np.int8),
    ("defect", np.int8),
    ("group", np.int32),
]
PATCH_DTYPE = np.dtype(PATCH_FIELDS)


@dataclass
class PatchIndex:
    """Patches as rows of a structured array, plus the group names they index.

    Attributes:
        rows: (N,) structured array with fields board, y, x, h, w, label (1 defective, 0 defect-free),
            defect (type code, 0 none) and group (index into ``groups``).
        groups: PCB type names.
    """

    rows: np.ndarray
    groups: list[str]

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def labels(self) -> np.ndarray:
        """(N,) int64 labels."""
        return self.rows["label"].astype(np.int64)

    @property
    def group_ids(self) -> np.ndarray:
        """(N,) int64 group indices."""
        return self.rows["group"].astype(np.int64)

    def group_names(self) -> np.ndarray:
        """(N,) group name of each patch."""
        return np.asarray(self.groups, dtype=object)[self.rows["group"]]

    def defect_names(self) -> np.ndarray:
        """(N,) defect type name of each patch (``none`` for defect-free)."""
        return np.asarray([defect_name(int(c)) for c in self.rows["defect"]], dtype=object)

    def select(self, mask_or_idx: np.ndarray) -> PatchIndex:
        """A PatchIndex over a subset of rows."""
        return PatchIndex(self.rows[mask_or_idx], self.groups)

    def stats(self) -> dict:
        """Counts in the form of ``pcbsiam data stats``."""
        labels = self.rows["label"]
        by_type = Counter(defect_name(int(c)) for c in self.rows["defect"][labels == 1])
        return {
            "patches": int(len(self.rows)),
            "defective": int((labels == 1).sum()),
            "defect_free": int((labels == 0).sum()),
            "defective_share": round(float((labels == 1).mean()) if len(labels) else 0.0, 4),
            "by_type": {defect_name(c): by_type.get(defect_name(c), 0) for c in range(1, 7)},
            "by_group": dict(sorted(Counter(self.group_names().tolist()).items())),
        }


def grid_origins(length: int, patch: int, stride: int, cover: bool = False) -> list[int]:
    """Top-left coordinates of patches of size ``patch`` every ``stride`` px inside ``length`` px.

    With ``cover`` a last patch flush with the end is added where the grid stops short of it.
    """
    if length < patch:
        return []
    starts = list(range(0, length - patch + 1, stride))
    return [*starts, length - patch] if cover and starts[-1] != length - patch else starts


def tile_grid(height: int, width: int, tile: int, stride: int | None = None, cover: bool = False) -> np.ndarray:
    """The one grid of square tiles that the protocol, the classical comparison and inspection use.

    Args:
        height: image height in px.
        width: image width in px.
        tile: tile side.
        stride: step between tiles (default ``tile``: no overlap).
        cover: add a last row and column flush with the image border, so every pixel is covered.

    Returns:
        (M, 4) int64 rows ``(y, x, h, w)``, row-major; (0, 4) when no tile fits.
    """
    stride = tile if stride is None else stride
    if tile < 1 or stride < 1:
        raise ValueError(f"tile size and stride must be positive, got {tile} and {stride}")
    rows = [
        (y, x, tile, tile)
        for y in grid_origins(height, tile, stride, cover)
        for x in grid_origins(width, tile, stride, cover)
    ]
    return np.array(rows, dtype=np.int64).reshape(-1, 4)


def overlap_fractions(boxes: np.ndarray, y: int, x: int, h: int, w: int) -> np.ndarray:
    """Share of each box's area inside the patch ``[y, y+h) x [x, x+w)``.

    Args:
        boxes: (N, 4 or more) rows beginning ``x1 y1 x2 y2`` (annotations ``... type``, detections
            ``... confidence type``).

    Returns:
        (N,) float64 in [0, 1].
    """
    if len(boxes) == 0:
        return np.zeros(0)
    x1, y1, x2, y2 = (boxes[:, i].astype(np.int64) for i in range(4))
    iw = np.clip(np.minimum(x2, x + w) - np.maximum(x1, x), 0, None)
    ih = np.clip(np.minimum(y2, y + h) - np.maximum(y1, y), 0, None)
    return (iw * ih) / ((x2 - x1) * (y2 - y1))


def held_boxes(boxes: np.ndarray, y: int, x: int, h: int, w: int, min_fraction: float = 0.5) -> np.ndarray:
    """(N,) bool: the boxes with at least ``min_fraction`` of their area inside the patch, the protocol's rule for
    a defective patch (:func:`label_patch`), here for any boxes (e.g. detections, ``x1 y1 x2 y2 ...`` rows)."""
    return overlap_fractions(boxes, y, x, h, w) >= min_fraction


def label_patch(boxes: np.ndarray, y: int, x: int, h: int, w: int, min_fraction: float = 0.5) -> tuple[int, int]:
    """Protocol label of one patch.

    Returns:
        (label, defect type): (1, type) defective, (0, 0) defect-free, (-1, 0) left out.
    """
    f = overlap_fractions(boxes, y, x, h, w)
    if len(f) == 0 or f.max() == 0:
        return 0, 0
    best = int(np.argmax(f))  # first maximum in file order
    if f[best] >= min_fraction:
        return 1, int(boxes[best, 4])
    return -1, 0


def cut_patches(
    pairs: list[BoardPair],
    shapes: list[tuple[int, int]],
    patch: int = 128,
    stride: int | None = None,
    min_fraction: float = 0.5,
    groups: list[str] | None = None,
) -> PatchIndex:
    """Cut every board into a grid of labelled patches.

    Items with a whole-image label (paper layout) give one patch covering the whole image.

    Args:
        pairs: the items.
        shapes: (H, W) of each item's image.
        patch: patch size P (protocol: 128).
        stride: grid step (protocol: P, non-overlapping); smaller for overlapping tiles.
        min_fraction: least overlap fraction of a box for a defective patch (protocol: 0.5).
        groups: group names to index into (default: sorted groups of ``pairs``).
    """
    groups = groups if groups is not None else sorted({p.group for p in pairs})
    gid = {g: i for i, g in enumerate(groups)}
    out = []
    for b, (pair, (h, w)) in enumerate(zip(pairs, shapes, strict=True)):
        if pair.label is not None:
            out.append((b, 0, 0, h, w, pair.label, 0, gid[pair.group]))
            continue
        for y, x, _, _ in tile_grid(h, w, patch, stride).tolist():
            label, kind = label_patch(pair.boxes, y, x, patch, patch, min_fraction)
            if label >= 0:
                out.append((b, y, x, patch, patch, label, kind, gid[pair.group]))
    return PatchIndex(np.array(out, dtype=PATCH_DTYPE), list(groups))


def subsample(index: PatchIndex, limit: int | None, seed: int) -> PatchIndex:
    """At most ``limit`` rows, drawn once with ``seed`` (all rows when ``limit`` is None)."""
    if limit is None or len(index) <= limit:
        return index
    keep = np.sort(np.random.default_rng(seed).choice(len(index), size=limit, replace=False))
    return index.select(keep)
