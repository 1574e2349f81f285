"""Plain records shared by every reader: a tested image, its reference and its defect boxes."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pcbsiam.errors import DataError

#: The file :func:`pcbsiam.data.synth.writer.write_dataset` leaves in a synthetic data set's root.
SYNTHETIC_MARKER = "pcbsiam-synthetic.json"


@dataclass(frozen=True)
class BoardPair:
    """One tested image and the defect-free reference it is compared with.

    Attributes:
        name: unique item name (DeepPCB: ``20085000``; paper layout: the file stem).
        group: PCB type (DeepPCB: ``group20085``; paper layout: file-name prefix).
        tested: path of the image under test.
        template: path of the defect-free reference (template or standard board).
        boxes: (N, 5) int64 rows ``x1 y1 x2 y2 type`` in tested-image pixels; empty for none.
        label: whole-image label (1 defective, 0 defect-free) where the layout gives one instead
            of boxes (paper layout); ``None`` where labels come from the boxes per patch.
    """

    name: str
    group: str
    tested: Path
    template: Path
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 5), np.int64), compare=False)
    label: int | None = None


@dataclass
class BoardList:
    """The items a reader found, and the ones it had to skip.

    Attributes:
        pairs: readable items, in file order.
        skipped: one error per item left out (each names its file and the problem).
    """

    pairs: list[BoardPair]
    skipped: list[DataError] = field(default_factory=list)

    @property
    def groups(self) -> list[str]:
        """Sorted distinct PCB types."""
        return sorted({p.group for p in self.pairs})

    def subset(self, indices: list[int] | np.ndarray) -> BoardList:
        """The items at ``indices`` (skipped items are kept for reporting)."""
        return BoardList([self.pairs[int(i)] for i in indices], list(self.skipped))


def check_boxes(boxes: np.ndarray, width: int, height: int, path: Path) -> None:
    """Raise if a box lies outside a ``width`` x ``height`` image.

    Args:
        boxes: (N, 5) rows ``x1 y1 x2 y2 type``.
    """
    for x1, y1, x2, y2, _ in boxes.tolist():
        if x1 < 0 or y1 < 0 or x2 > width or y2 > height:
            raise DataError(path, f"box {x1} {y1} {x2} {y2} lies outside the {width}x{height} image")
