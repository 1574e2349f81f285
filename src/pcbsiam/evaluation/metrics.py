"""Evaluation metrics for the defective / defect-free decision.

Convention used throughout pcbsiam: an item is predicted **defective (label 1)** when its score (an
L2 distance between embeddings, or a classical defect-pixel count) is strictly **above** the
threshold, and defect-free (label 0) otherwise. See :func:`predict_defective`.

All functions are pure functions of NumPy arrays. The ROC curve, the AUROC and the confusion counts
come from scikit-learn (imported on first use, as it is slow to import); this module adds input
checks with sentences, the ``score > threshold`` rule and plain-Python results. Zero divisions give
``0.0``, as scikit-learn's ``zero_division=0``; the one exception is the AUROC, which is undefined
(NaN from :func:`roc_auc`, ``None`` in :func:`binary_metrics`) when only one class is present.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

__all__ = [
    "binary_metrics",
    "confusion",
    "format_mean_std",
    "grouped_metrics",
    "mean_std",
    "predict_defective",
    "recall_by_type",
    "roc_auc",
    "roc_curve",
]


def _as_scores_labels(scores: ArrayLike, labels: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Validate and convert ``scores`` (N,) and ``labels`` (N,) to float64 and int64 arrays.

    Raises:
        ValueError: on empty input, mismatched lengths, non-finite scores or labels other than 0/1.
    """
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    y_raw = np.asarray(labels).reshape(-1)
    if s.size == 0:
        raise ValueError("No scores were given: at least one scored item is needed.")
    if s.shape != y_raw.shape:
        raise ValueError(f"There are {s.size} scores but {y_raw.size} labels; they must be the same length.")
    n_nan = int(np.isnan(s).sum())
    if n_nan:
        raise ValueError(f"{n_nan} of {s.size} scores are NaN; remove or fix them before computing metrics.")
    n_inf = int(np.isinf(s).sum())
    if n_inf:
        raise ValueError(f"{n_inf} of {s.size} scores are infinite; scores must be finite numbers.")
    if y_raw.dtype == np.bool_:
        y = y_raw.astype(np.int64)
    else:
        y = np.asarray(y_raw, dtype=np.float64)
        bad = ~np.isin(y, (0.0, 1.0))
        if bad.any():
            examples = ", ".join(repr(v) for v in np.unique(y_raw[bad])[:5].tolist())
            raise ValueError(f"Labels must be 0 (defect-free) or 1 (defective); found {examples}.")
        y = y.astype(np.int64)
    return s, y


def _div(num: float, den: float) -> float:
    """``num / den`` as a Python float, or ``0.0`` when ``den`` is zero (sklearn's zero_division=0)."""
    return float(num) / float(den) if den else 0.0


def predict_defective(scores: ArrayLike, threshold: float) -> np.ndarray:
    """Apply the decision rule: defective iff the score is strictly above ``threshold``.

    Args:
        scores: (N,) scores.
        threshold: decision threshold.

    Returns:
        (N,) bool array, True for items predicted defective.
    """
    return np.asarray(scores, dtype=np.float64).reshape(-1) > float(threshold)


def roc_curve(scores: ArrayLike, labels: ArrayLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC curve of ``scores`` as a detector of defective items (higher score = more defective).

    ``sklearn.metrics.roc_curve(labels, scores, drop_intermediate=False)``: one point per distinct
    score, starting at (0, 0) with threshold ``+inf``. Point ``i`` is the rate obtained by calling
    defective every item with ``score >= thresholds[i]`` (the ROC convention; pcbsiam's own
    decisions use ``score > threshold``, which only shifts which side ties fall on).

    Args:
        scores: (N,) scores.
        labels: (N,) labels in {0, 1}, 1 = defective.

    Returns:
        ``(fpr, tpr, thresholds)``, each of shape (K + 1,) where K is the number of distinct scores.
        When only one class is present, the rate that would divide by zero (``fpr`` without
        defect-free items, ``tpr`` without defective items) is all NaN; no error or warning is raised.
    """
    from sklearn.exceptions import UndefinedMetricWarning
    from sklearn.metrics import roc_curve as sk_roc_curve

    s, y = _as_scores_labels(scores, labels)
    with warnings.catch_warnings():
        # One class only: scikit-learn already returns the NaN rate; its warning would only repeat it.
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        fpr, tpr, thresholds = sk_roc_curve(y, s, pos_label=1, drop_intermediate=False)
    return fpr, tpr, thresholds


def roc_auc(scores: ArrayLike, labels: ArrayLike) -> float:
    """Area under the ROC curve: ``sklearn.metrics.roc_auc_score(labels, scores)``.

    Tied scores count half (trapezoidal area over distinct scores).

    Args:
        scores: (N,) scores.
        labels: (N,) labels in {0, 1}, 1 = defective.

    Returns:
        The AUROC as a Python float, or ``nan`` (no error, no warning) when only one class is
        present, where the AUROC is undefined (scikit-learn raises there).
    """
    from sklearn.metrics import roc_auc_score

    s, y = _as_scores_labels(scores, labels)
    if y.min() == y.max():
        return math.nan
    return float(roc_auc_score(y, s))


def confusion(pred: ArrayLike, labels: ArrayLike) -> dict[str, int]:
    """Confusion counts of boolean predictions against labels (``sklearn.metrics.confusion_matrix``).

    Args:
        pred: (N,) bool (or 0/1) predictions, True = predicted defective.
        labels: (N,) labels in {0, 1}, 1 = defective.

    Returns:
        ``{"tn", "fp", "fn", "tp"}`` as Python ints (all 0 for empty input).
    """
    from sklearn.metrics import confusion_matrix

    p = np.asarray(pred).reshape(-1).astype(bool)
    y = np.asarray(labels).reshape(-1).astype(bool)
    if p.shape != y.shape:
        raise ValueError(f"There are {p.size} predictions but {y.size} labels; they must be the same length.")
    if p.size == 0:  # scikit-learn refuses empty input
        return {"tn": 0, "fp": 0, "fn": 0, "tp": 0}
    tn, fp, fn, tp = confusion_matrix(y, p, labels=[False, True]).ravel().tolist()
    return {"tn": tn, "fp": fp, "fn": fn, "tp": tp}


def binary_metrics(scores: ArrayLike, labels: ArrayLike, threshold: float) -> dict[str, Any]:
    """All headline metrics of thresholding ``scores`` at ``threshold`` (defective iff score > threshold).

    Matches scikit-learn (``accuracy_score``, ``balanced_accuracy_score``, ``precision_score``,
    ``recall_score``, ``f1_score`` with ``zero_division=0``, ``roc_auc_score``), with label 1
    (defective) as the positive class. ``balanced_accuracy`` averages the recall of the classes
    present in ``labels``, as scikit-learn does.

    Args:
        scores: (N,) scores.
        labels: (N,) labels in {0, 1}, 1 = defective.
        threshold: decision threshold.

    Returns:
        A JSON-serialisable dict of plain Python numbers: accuracy, balanced_accuracy, precision,
        recall, f1, false_alarm_rate (FP / (FP + TN)), auroc (``None`` when only one class is
        present), confusion ``{tn, fp, fn, tp}``, n, n_defective, n_defect_free, threshold.
    """
    s, y = _as_scores_labels(scores, labels)
    # The ratios below follow from one set of counts; sklearn's *_score functions would recount them each.
    c = confusion(s > float(threshold), y)
    tn, fp, fn, tp = c["tn"], c["fp"], c["fn"], c["tp"]
    n_pos, n_neg = tp + fn, tn + fp
    recall = _div(tp, n_pos)
    specificity = _div(tn, n_neg)
    class_recalls = [r for r, present in ((recall, n_pos > 0), (specificity, n_neg > 0)) if present]
    auroc = roc_auc(s, y)
    return {
        "accuracy": _div(tp + tn, s.size),
        "balanced_accuracy": float(sum(class_recalls) / len(class_recalls)),
        "precision": _div(tp, tp + fp),
        "recall": recall,
        "f1": _div(2 * tp, 2 * tp + fp + fn),
        "false_alarm_rate": _div(fp, n_neg),
        "auroc": None if math.isnan(auroc) else auroc,
        "confusion": c,
        "n": int(s.size),
        "n_defective": int(n_pos),
        "n_defect_free": int(n_neg),
        "threshold": float(threshold),
    }


def _group_array(groups: ArrayLike, n: int, what: str) -> np.ndarray:
    g = np.asarray(groups).reshape(-1)
    if g.size != n:
        raise ValueError(f"There are {n} scores but {g.size} {what}; they must be the same length.")
    return g.astype(str)


def grouped_metrics(
    scores: ArrayLike, labels: ArrayLike, threshold: float, groups: ArrayLike
) -> dict[str, dict[str, Any]]:
    """Accuracy per group (e.g. per board or per image), thresholding at ``threshold``.

    Args:
        scores: (N,) scores.
        labels: (N,) labels in {0, 1}, 1 = defective.
        threshold: decision threshold (defective iff score > threshold).
        groups: (N,) group name of every item.

    Returns:
        ``{group: {"accuracy": float, "n": int, "n_defective": int}}``, groups in sorted order.
    """
    s, y = _as_scores_labels(scores, labels)
    g = _group_array(groups, s.size, "group names")
    correct = (s > float(threshold)) == (y == 1)
    out: dict[str, dict[str, Any]] = {}
    for name in sorted(np.unique(g).tolist()):
        m = g == name
        out[name] = {
            "accuracy": float(np.mean(correct[m])),
            "n": int(m.sum()),
            "n_defective": int(y[m].sum()),
        }
    return out


def recall_by_type(
    scores: ArrayLike, labels: ArrayLike, threshold: float, types: ArrayLike
) -> dict[str, dict[str, Any]]:
    """Recall of defective items per defect type; defect-free items (label 0) are ignored.

    Args:
        scores: (N,) scores.
        labels: (N,) labels in {0, 1}, 1 = defective.
        threshold: decision threshold (defective iff score > threshold).
        types: (N,) defect-type name of every item (anything for defect-free items).

    Returns:
        ``{type: {"recall": float, "n": int, "detected": int}}`` over the types of defective items,
        in sorted order; ``n`` counts the defective items of that type, ``detected`` those above
        the threshold.
    """
    s, y = _as_scores_labels(scores, labels)
    t = _group_array(types, s.size, "defect types")
    pos = y == 1
    detected = s > float(threshold)
    out: dict[str, dict[str, Any]] = {}
    for name in sorted(np.unique(t[pos]).tolist()):
        m = pos & (t == name)
        n = int(m.sum())
        hit = int(np.count_nonzero(detected[m]))
        out[name] = {"recall": _div(hit, n), "n": n, "detected": hit}
    return out


def _is_number(v: object) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))


def mean_std(values: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Aggregate the metrics of repeated runs into mean, sample standard deviation and count.

    Every key whose value is a number in all dicts becomes ``{"mean": m, "std": s, "n": k}`` with
    ``s`` the sample standard deviation (ddof=1; ``0.0`` when k == 1). Keys whose values are dicts
    in all runs are aggregated recursively. Other keys (strings, ``None``, keys missing from some
    runs, booleans) are left out.

    Args:
        values: k >= 1 dicts, e.g. the :func:`binary_metrics` of k seeds.

    Returns:
        A nested dict with the same key order as ``values[0]``.
    """
    if len(values) == 0:
        raise ValueError("mean_std needs at least one dict of metrics to aggregate.")
    out: dict[str, Any] = {}
    for key, first in values[0].items():
        column = [v.get(key) for v in values]
        if all(_is_number(x) for x in column):
            arr = np.asarray(column, dtype=np.float64)
            k = arr.size
            std = float(np.std(arr, ddof=1)) if k > 1 else 0.0
            out[key] = {"mean": float(np.mean(arr)), "std": std, "n": k}
        elif isinstance(first, Mapping) and all(isinstance(x, Mapping) for x in column):
            sub = mean_std(column)  # type: ignore[arg-type]
            if sub:
                out[key] = sub
    return out


def format_mean_std(mean: float, std: float, percent: bool = True, digits: int | None = None) -> str:
    """Format a mean and standard deviation for a table, e.g. ``"95.42 ± 0.31"``.

    Args:
        mean: the mean, as a fraction when ``percent`` is True (0.9542 -> "95.42").
        std: the standard deviation, same unit as ``mean``.
        percent: multiply both by 100.
        digits: decimals; defaults to 2 with ``percent`` and 4 without.
    """
    if digits is None:
        digits = 2 if percent else 4
    scale = 100.0 if percent else 1.0
    return f"{mean * scale:.{digits}f} ± {std * scale:.{digits}f}"
