"""The DeepPCB detection benchmark: matching, precision / recall / F-score and AP over a split.

The rules are the dataset's own (``docs/deeppcb-det.md``), restated here:

- IoU of two axis-aligned boxes with area ``(x2 - x1) * (y2 - y1)``.
- Per image, ground-truth boxes are visited in file order and, for each, detections in file order;
  a pair with IoU **strictly greater** than 0.33 whose members are both unmatched is matched, which
  uses both up. The match is correct only if the two types are equal; a wrong-type match counts as
  wrong and still uses up both boxes.
- Precision = correct / detections, recall = correct / ground-truth boxes, F = 2PR / (P + R), each
  over the whole split. Any of them with a zero denominator is 0.
- AP: every detection of the split ranked by confidence, highest first; AP = (sum over the correct
  detections of the precision at their rank) / ground-truth boxes. Equal confidences keep the order
  the detections were given in (items in order, then detections in file order): a stable sort.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import ArrayLike
from torchvision.ops import box_iou as tv_box_iou

from pcbsiam.data.deeppcb import read_detections
from pcbsiam.data.defects import DEFECT_TYPES
from pcbsiam.data.records import BoardPair
from pcbsiam.errors import DataError

__all__ = [
    "IOU_THRESHOLD",
    "DetectionReport",
    "ImageMatch",
    "box_iou",
    "evaluate_detections",
    "evaluate_folder",
    "match_image",
    "render_report",
]

log = logging.getLogger(__name__)

#: A pair matches when its IoU is strictly above this.
IOU_THRESHOLD = 0.33

_N_TYPES = len(DEFECT_TYPES)
_TYPE_NAMES = [DEFECT_TYPES[code] for code in range(1, _N_TYPES + 1)]


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box of ``a`` with every box of ``b``, areas ``(x2 - x1) * (y2 - y1)``
    (``torchvision.ops.box_iou`` in float64).

    Args:
        a: (A, >=4) rows starting ``x1 y1 x2 y2``.
        b: (B, >=4) rows starting ``x1 y1 x2 y2``.

    Returns:
        (A, B) float64 IoU.
    """
    pair = (torch.as_tensor(np.asarray(x, dtype=np.float64)[:, :4]) for x in (a, b))
    return tv_box_iou(*pair).numpy()


def _as_boxes(value: ArrayLike, columns: int, what: str) -> np.ndarray:
    """Validate ``value`` as (N, columns) finite rows ``x1 y1 x2 y2 ... type`` with types 1..6.

    Raises:
        ValueError: wrong shape, a non-finite value, an empty box or an unknown type.
    """
    arr = np.asarray(value, dtype=np.float64)
    if arr.size == 0:
        arr = arr.reshape(0, columns)
    layout = "x1 y1 x2 y2 type" if columns == 5 else "x1 y1 x2 y2 confidence type"
    if arr.ndim != 2 or arr.shape[1] != columns:
        raise ValueError(f"The {what} must be an (N, {columns}) array '{layout}'; got shape {tuple(arr.shape)}.")
    if not np.isfinite(arr).all():
        raise ValueError(f"The {what} hold a non-finite value; every value must be a finite number.")
    kinds = arr[:, -1]
    bad = (kinds != np.round(kinds)) | (kinds < 1) | (kinds > _N_TYPES)
    if bad.any():
        raise ValueError(f"The {what} hold type {kinds[bad][0]:g}; types are the DeepPCB codes 1..{_N_TYPES}.")
    empty = (arr[:, 2] <= arr[:, 0]) | (arr[:, 3] <= arr[:, 1])
    if empty.any():
        k = int(np.flatnonzero(empty)[0])
        raise ValueError(f"The {what} hold an empty box at row {k} {arr[k, :4].tolist()}; it needs x2 > x1, y2 > y1.")
    return arr


@dataclass(frozen=True, eq=False)
class ImageMatch:
    """The outcome of matching one image's detections with its ground truth.

    Attributes:
        gt_types: (G,) int64 ground-truth type codes.
        det_types: (D,) int64 predicted type codes.
        confidence: (D,) float64 detection confidences.
        matched_gt: (D,) int64 index of the ground-truth box each detection was matched with, -1 none.
        matched_det: (G,) int64 index of the detection each ground-truth box was matched with, -1 none.
        correct: (D,) bool, matched and of the same type.
        found: (G,) bool, matched and of the same type.
    """

    gt_types: np.ndarray
    det_types: np.ndarray
    confidence: np.ndarray
    matched_gt: np.ndarray
    matched_det: np.ndarray
    correct: np.ndarray
    found: np.ndarray

    @property
    def n_correct(self) -> int:
        """Correct detections (equal to the ground-truth boxes found)."""
        return int(self.correct.sum())


def match_image(gt: ArrayLike, det: ArrayLike, iou_threshold: float = IOU_THRESHOLD) -> ImageMatch:
    """Match one image's detections with its ground truth by the benchmark's greedy file-order rule.

    Args:
        gt: (G, 5) rows ``x1 y1 x2 y2 type`` in file order.
        det: (D, 6) rows ``x1 y1 x2 y2 confidence type`` in file order.
        iou_threshold: a pair matches only when its IoU is strictly above this.

    Raises:
        ValueError: a bad shape, a non-finite value, an empty box or a type outside 1..6.
    """
    g = _as_boxes(gt, 5, "ground-truth boxes")
    d = _as_boxes(det, 6, "detections")
    gt_types = g[:, 4].astype(np.int64)
    det_types = d[:, 5].astype(np.int64)
    matched_gt = np.full(len(d), -1, np.int64)
    matched_det = np.full(len(g), -1, np.int64)
    if len(g) and len(d):
        over = box_iou(g, d) > iou_threshold
        for i in range(len(g)):
            for j in np.flatnonzero(over[i]).tolist():  # detections in file order
                if matched_gt[j] < 0:
                    matched_gt[j], matched_det[i] = i, j
                    break
    has_gt = matched_gt >= 0
    correct = np.zeros(len(d), bool)
    correct[has_gt] = gt_types[matched_gt[has_gt]] == det_types[has_gt]
    found = np.zeros(len(g), bool)
    found[matched_gt[correct]] = True
    return ImageMatch(gt_types, det_types, d[:, 4].copy(), matched_gt, matched_det, correct, found)


def _div(num: float, den: float) -> float:
    return float(num) / float(den) if den else 0.0


def _share(num: int, den: int) -> float | None:
    return num / den if den else None


@dataclass(frozen=True, eq=False)
class DetectionReport:
    """Benchmark figures over a split; counts by type are indexed by type code - 1.

    Attributes:
        n_images: images evaluated.
        confusion: (6, 6) int64 matched pairs, rows ground-truth type, columns predicted type.
        missed: (6,) int64 ground-truth boxes per type that no detection was matched with.
        false: (6,) int64 detections per predicted type matched with no ground-truth box.
        ap: the benchmark's AP (see the module docstring).
        n_ignored_files: result files whose names match no evaluated image (:func:`evaluate_folder`).
    """

    n_images: int
    confusion: np.ndarray
    missed: np.ndarray
    false: np.ndarray
    ap: float
    n_ignored_files: int = 0

    @property
    def gt_per_type(self) -> np.ndarray:
        """(6,) ground-truth boxes per type."""
        return self.confusion.sum(axis=1) + self.missed

    @property
    def det_per_type(self) -> np.ndarray:
        """(6,) detections per predicted type."""
        return self.confusion.sum(axis=0) + self.false

    @property
    def correct_per_type(self) -> np.ndarray:
        """(6,) correct detections per type (= ground-truth boxes found)."""
        return np.diag(self.confusion).copy()

    @property
    def n_gt(self) -> int:
        return int(self.gt_per_type.sum())

    @property
    def n_det(self) -> int:
        return int(self.det_per_type.sum())

    @property
    def n_correct(self) -> int:
        return int(np.trace(self.confusion))

    @property
    def precision(self) -> float:
        """Correct / detections; 0 without detections."""
        return _div(self.n_correct, self.n_det)

    @property
    def recall(self) -> float:
        """Correct / ground-truth boxes; 0 without ground truth."""
        return _div(self.n_correct, self.n_gt)

    @property
    def f_score(self) -> float:
        """2PR / (P + R); 0 when P + R is 0."""
        p, r = self.precision, self.recall
        return _div(2 * p * r, p + r)

    def per_type(self) -> dict[str, dict[str, Any]]:
        """Figures by ground-truth / predicted type, keyed by the project's type names.

        Shares with a zero denominator (no box of the type) are ``None``.
        """
        out: dict[str, dict[str, Any]] = {}
        gt, det, ok = self.gt_per_type, self.det_per_type, self.correct_per_type
        for k, name in enumerate(_TYPE_NAMES):
            out[name] = {
                "n_gt": int(gt[k]),
                "n_det": int(det[k]),
                "correct": int(ok[k]),
                "recall": _share(int(ok[k]), int(gt[k])),
                "precision": _share(int(ok[k]), int(det[k])),
                "missed": int(self.missed[k]),
                "missed_share": _share(int(self.missed[k]), int(gt[k])),
                "false": int(self.false[k]),
            }
        return out

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able summary; the confusion matrix as ``{gt type: {predicted type: count}}``."""
        return {
            "n_images": self.n_images,
            "n_gt": self.n_gt,
            "n_det": self.n_det,
            "n_correct": self.n_correct,
            "precision": self.precision,
            "recall": self.recall,
            "f_score": self.f_score,
            "ap": self.ap,
            "per_type": self.per_type(),
            "confusion": {
                gt_name: {name: int(self.confusion[i, j]) for j, name in enumerate(_TYPE_NAMES)}
                for i, gt_name in enumerate(_TYPE_NAMES)
            },
            "n_ignored_files": self.n_ignored_files,
        }


def _ap(confidence: np.ndarray, correct: np.ndarray, n_gt: int) -> float:
    """The benchmark's AP from (N,) confidences and (N,) correct flags in the order given."""
    if not n_gt or not len(confidence):
        return 0.0
    order = np.argsort(-confidence, kind="stable")  # ties keep the order given
    hits = correct[order]
    precision_at_rank = np.cumsum(hits) / np.arange(1, len(hits) + 1)
    return float(precision_at_rank[hits].sum() / n_gt)


def evaluate_detections(
    items: Iterable[tuple[str, ArrayLike, ArrayLike]], iou_threshold: float = IOU_THRESHOLD
) -> DetectionReport:
    """Score detections over a split by the benchmark's rules.

    Args:
        items: ``(name, gt, det)`` per image, with gt (G, 5) rows ``x1 y1 x2 y2 type`` and det (D, 6)
            rows ``x1 y1 x2 y2 confidence type``, each in file order. The order of the items only
            breaks ties of confidence in the AP ranking.
        iou_threshold: a pair matches only when its IoU is strictly above this.

    Raises:
        ValueError: an image's boxes are invalid (the message names the image), or a name repeats.
    """
    confusion = np.zeros((_N_TYPES, _N_TYPES), np.int64)
    missed = np.zeros(_N_TYPES, np.int64)
    false = np.zeros(_N_TYPES, np.int64)
    confidences: list[np.ndarray] = []
    corrects: list[np.ndarray] = []
    seen: set[str] = set()
    for name, gt, det in items:
        if name in seen:
            raise ValueError(f"Image {name!r} is given twice; each image must be evaluated once.")
        seen.add(name)
        try:
            m = match_image(gt, det, iou_threshold)
        except ValueError as exc:
            raise ValueError(f"Image {name!r}: {exc}") from None
        has_gt = m.matched_gt >= 0
        np.add.at(confusion, (m.gt_types[m.matched_gt[has_gt]] - 1, m.det_types[has_gt] - 1), 1)
        np.add.at(missed, m.gt_types[m.matched_det < 0] - 1, 1)
        np.add.at(false, m.det_types[~has_gt] - 1, 1)
        confidences.append(m.confidence)
        corrects.append(m.correct)
    n_gt = int(confusion.sum() + missed.sum())
    conf = np.concatenate(confidences) if confidences else np.zeros(0)
    ok = np.concatenate(corrects) if corrects else np.zeros(0, bool)
    return DetectionReport(len(seen), confusion, missed, false, _ap(conf, ok, n_gt))


def evaluate_folder(
    results_dir: str | Path, pairs: Sequence[BoardPair], iou_threshold: float = IOU_THRESHOLD
) -> DetectionReport:
    """Score a folder of result files ``<name>.txt`` against the ground truth of ``pairs``.

    An image without a result file has no detections. ``.txt`` files whose names match no pair are
    ignored; their number is logged as a warning and kept in ``n_ignored_files``.

    Args:
        results_dir: folder of result files (:func:`pcbsiam.data.deeppcb.write_detections`).
        pairs: the evaluated images, in order; ``boxes`` holds each one's (N, 5) ground truth.
        iou_threshold: a pair matches only when its IoU is strictly above this.

    Raises:
        DataError: the folder is missing, or a result file cannot be read.
    """
    folder = Path(results_dir)
    if not folder.is_dir():
        raise DataError(folder, "results folder not found (expected one <image id>.txt file per tested image)")
    names = {p.name for p in pairs}
    ignored = sorted(f.name for f in folder.glob("*.txt") if f.is_file() and f.stem not in names)
    if ignored:
        shown = ", ".join(ignored[:5]) + (", ..." if len(ignored) > 5 else "")
        log.warning("%s: ignored %d result files that match no evaluated image (%s)", folder, len(ignored), shown)

    def items() -> Iterable[tuple[str, np.ndarray, np.ndarray]]:
        for p in pairs:
            path = folder / f"{p.name}.txt"
            det = read_detections(path) if path.is_file() else np.zeros((0, 6))
            yield p.name, p.boxes, det

    return replace(evaluate_detections(items(), iou_threshold), n_ignored_files=len(ignored))


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.2f}"


def render_report(report: DetectionReport) -> str:
    """A short markdown summary: overall figures, figures by type, then the type confusion matrix."""
    lines = [
        f"{report.n_images} images, {report.n_gt} defects, {report.n_det} detections, {report.n_correct} correct.",
        "",
        "| P % | R % | F % | AP % |",
        "|---:|---:|---:|---:|",
        f"| {_pct(report.precision)} | {_pct(report.recall)} | {_pct(report.f_score)} | {_pct(report.ap)} |",
        "",
        "| type | defects | recall % | detections | precision % | missed % | false detections |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, t in report.per_type().items():
        lines.append(
            f"| {name} | {t['n_gt']} | {_pct(t['recall'])} | {t['n_det']} | {_pct(t['precision'])} "
            f"| {_pct(t['missed_share'])} | {t['false']} |"
        )
    lines += [
        "",
        "| defect \\ predicted | " + " | ".join(_TYPE_NAMES) + " | missed |",
        "|---|" + "---:|" * (_N_TYPES + 1),
    ]
    for i, name in enumerate(_TYPE_NAMES):
        cells = [str(int(v)) for v in report.confusion[i]] + [str(int(report.missed[i]))]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
