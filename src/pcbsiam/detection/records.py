"""The record a detector returns for one board pair: boxes, scores, defect types and the registration."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pcbsiam.data.defects import defect_name
from pcbsiam.data.registration import Shift

__all__ = ["Detections"]


@dataclass(frozen=True)
class Detections:
    """Typed defect boxes found on one tested board.

    Attributes:
        boxes: (N, 4) float64 rows ``x1 y1 x2 y2`` in tested-image pixels (``x2``, ``y2`` exclusive).
        scores: (N,) float64 confidences in [0, 1].
        types: (N,) int64 DeepPCB defect codes 1..6 (see :data:`pcbsiam.data.defects.DEFECT_TYPES`).
        shift: registration of the tested image onto its template.
    """

    boxes: np.ndarray
    scores: np.ndarray
    types: np.ndarray
    shift: Shift

    def __post_init__(self) -> None:
        boxes = np.asarray(self.boxes, dtype=np.float64).reshape(-1, 4)
        scores = np.asarray(self.scores, dtype=np.float64).reshape(-1)
        types = np.asarray(self.types, dtype=np.int64).reshape(-1)
        if not len(boxes) == len(scores) == len(types):
            raise ValueError(
                f"Detections need as many boxes, scores and types, got {len(boxes)}, {len(scores)} and {len(types)}."
            )
        object.__setattr__(self, "boxes", boxes)
        object.__setattr__(self, "scores", scores)
        object.__setattr__(self, "types", types)

    @classmethod
    def empty(cls, shift: Shift) -> Detections:
        """No detection."""
        return cls(np.zeros((0, 4)), np.zeros(0), np.zeros(0, np.int64), shift)

    def __len__(self) -> int:
        return len(self.scores)

    def as_array(self) -> np.ndarray:
        """(N, 6) float64 rows ``x1 y1 x2 y2 score type``, highest score first (ties keep their order)."""
        order = np.argsort(-self.scores, kind="stable")
        return np.column_stack([self.boxes, self.scores, self.types.astype(np.float64)])[order].reshape(-1, 6)

    def records(self, box_decimals: int = 2) -> list[dict]:
        """JSON records, highest score first: ``{"box": [x1, y1, x2, y2], "type": name, "code": 1..6,
        "confidence": c}``, the box rounded to ``box_decimals`` and the confidence to 6 decimals."""
        return [
            {
                "box": [round(v, box_decimals) for v in (x1, y1, x2, y2)],
                "type": defect_name(int(code)),
                "code": int(code),
                "confidence": round(conf, 6),
            }
            for x1, y1, x2, y2, conf, code in self.as_array().tolist()
        ]
