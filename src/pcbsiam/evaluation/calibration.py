"""Choosing the decision threshold on training (or calibration) scores.

An item is called defective when its score is strictly above the threshold (see
:func:`pcbsiam.evaluation.metrics.predict_defective`). :func:`choose_threshold` sweeps candidate thresholds
and keeps the best one under a policy:

* ``"accuracy"`` - the paper's rule: the threshold of best accuracy on the training scores.
* ``"balanced_accuracy"`` - best mean of the recalls of defective and defect-free items
  (robust to class imbalance).
* ``"f1"`` - best F1 score of the defective class.
* ``"recall:<r>"``, e.g. ``"recall:0.995"`` - the highest threshold that still detects at least a
  fraction ``r`` of the defective items, i.e. the fewest false alarms under that recall constraint.

Candidates are the midpoints between consecutive distinct sorted scores, plus one just below the
minimum and one just above the maximum (offset by ``1e-6 * max(1, |score|)``), so items with equal
scores always get the same verdict. When several candidates reach the same best value, the median
of them in increasing threshold order (the lower median for an even count) is kept, which is
deterministic and tends to lie in the middle of a plateau. The sweep is O(n log n).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from pcbsiam.errors import ConfigError
from pcbsiam.evaluation.metrics import _as_scores_labels, binary_metrics

__all__ = ["POLICIES", "Calibration", "choose_threshold", "parse_policy"]

#: Policy names accepted by :func:`choose_threshold` (``recall`` is written ``"recall:<r>"``).
POLICIES: tuple[str, ...] = ("accuracy", "balanced_accuracy", "f1", "recall:<r>")

_REL_OFFSET = 1e-6


@dataclass
class Calibration:
    """A chosen threshold and how it was chosen.

    Attributes:
        threshold: items with a score strictly above it are called defective.
        policy: the policy string that chose it, e.g. ``"accuracy"`` or ``"recall:0.995"``.
        value: the policy's metric at ``threshold`` on the calibration scores (accuracy, balanced
            accuracy, F1, or the recall reached for a recall policy).
        warning: a sentence explaining why the threshold may be unreliable (only one class in the
            calibration data), else ``None``.
    """

    threshold: float
    policy: str
    value: float
    warning: str | None = None


def parse_policy(policy: str) -> tuple[str, float | None]:
    """Split a policy string into its name and, for ``"recall:<r>"``, the target recall.

    Raises:
        ConfigError (a ValueError): an unknown policy, or a recall target outside (0, 1].
    """
    name = policy.strip().lower()
    if name in ("accuracy", "balanced_accuracy", "f1"):
        return name, None
    if name.startswith("recall:"):
        text = name.split(":", 1)[1].strip()
        try:
            target = float(text)
        except ValueError:
            target = math.nan
        if not 0.0 < target <= 1.0:
            raise ConfigError(
                f"Policy {policy!r}: the target recall must be a number between 0 and 1 (above 0, at most 1), "
                f"e.g. 'recall:0.995'; got {text!r}."
            )
        return "recall", target
    raise ConfigError(
        f"Unknown threshold policy {policy!r}; valid policies are 'accuracy', 'balanced_accuracy', "
        "'f1' and 'recall:<r>' with 0 < r <= 1 (e.g. 'recall:0.995')."
    )


def _offset(x: float) -> float:
    return _REL_OFFSET * max(1.0, abs(x))


def _candidates(unique: np.ndarray) -> np.ndarray:
    """(K + 1,) thresholds for K sorted distinct scores: below all, between neighbours, above all.

    Candidate ``j`` calls defective exactly the scores ``unique[j:]``.
    """
    lo, hi = unique[:-1], unique[1:]
    mid = lo + (hi - lo) / 2.0
    # With adjacent floating-point neighbours the midpoint may round up onto ``hi``; ``lo`` itself
    # then separates the two values equally well under the strict ``>`` rule.
    mid = np.where(mid < hi, mid, lo)
    first = unique[0] - _offset(unique[0])
    last = unique[-1] + _offset(unique[-1])
    return np.concatenate([[first], mid, [last]])


def choose_threshold(scores: ArrayLike, labels: ArrayLike, policy: str = "accuracy") -> Calibration:
    """Choose the decision threshold that is best on ``scores`` under ``policy``.

    See the module docstring for the policies, the candidate thresholds and the tie rule.

    Args:
        scores: (N,) calibration scores, higher = more likely defective.
        labels: (N,) labels in {0, 1}, 1 = defective.
        policy: ``"accuracy"`` (default), ``"balanced_accuracy"``, ``"f1"`` or ``"recall:<r>"``.

    Returns:
        The chosen :class:`Calibration`. If only one class is present, the threshold is just
        above the maximum score (all defect-free: everything passes) or just below the minimum
        (all defective: everything is flagged), ``warning`` says so, and a ``UserWarning`` is
        emitted.

    Raises:
        ValueError: on empty input, NaN or infinite scores, labels other than 0/1, or an unknown
            policy.
    """
    name, target = parse_policy(policy)
    s, y = _as_scores_labels(scores, labels)
    n = s.size
    n_pos = int(y.sum())
    n_neg = n - n_pos

    if n_pos == 0 or n_neg == 0:
        if n_pos == 0:
            threshold = float(s.max() + _offset(float(s.max())))
            warning = (
                f"All {n} calibration items are defect-free, so no threshold can be learnt; using one "
                f"just above the highest score ({threshold:.6g}), which lets every calibration item pass."
            )
        else:
            threshold = float(s.min() - _offset(float(s.min())))
            warning = (
                f"All {n} calibration items are defective, so no threshold can be learnt; using one "
                f"just below the lowest score ({threshold:.6g}), which flags every calibration item."
            )
        warnings.warn(warning, UserWarning, stacklevel=2)
        m = binary_metrics(s, y, threshold)
        return Calibration(threshold=threshold, policy=policy, value=float(m[name]), warning=warning)

    # Hand-written: sklearn's roc_curve cuts at scores (>=); the tie rule needs midpoint cuts with exact int counts.
    unique, inverse = np.unique(s, return_inverse=True)
    pos_per_value = np.bincount(inverse, weights=y, minlength=unique.size).astype(np.int64)
    cnt_per_value = np.bincount(inverse, minlength=unique.size).astype(np.int64)
    # Candidate j flags unique[j:], so its TP / FP counts are suffix sums (K + 1 candidates).
    tp = np.concatenate([np.cumsum(pos_per_value[::-1])[::-1], [0]])
    flagged = np.concatenate([np.cumsum(cnt_per_value[::-1])[::-1], [0]])
    fp = flagged - tp
    fn = n_pos - tp
    tn = n_neg - fp
    thresholds = _candidates(unique)

    if name == "recall":
        assert target is not None
        # Integer comparison avoids rounding trouble: tp / n_pos >= target.
        feasible = np.flatnonzero(tp >= target * n_pos - 1e-9 * n_pos)
        best = int(feasible[-1])  # recall is non-increasing in j; j = 0 (recall 1) is always feasible
        return Calibration(threshold=float(thresholds[best]), policy=policy, value=float(tp[best] / n_pos))

    # Exact integer (or correctly rounded) keys so equal metrics compare equal.
    if name == "accuracy":
        key = (tp + tn).astype(np.float64)
    elif name == "balanced_accuracy":
        key = (tp * n_neg + tn * n_pos).astype(np.float64)
    else:  # f1; denominators are > 0 because n_pos > 0
        key = 2.0 * tp / (2 * tp + fp + fn)
    tied = np.flatnonzero(key == key.max())
    best = int(tied[(tied.size - 1) // 2])
    if name == "accuracy":
        value = (tp[best] + tn[best]) / n
    elif name == "balanced_accuracy":
        value = (tp[best] / n_pos + tn[best] / n_neg) / 2.0
    else:
        value = key[best]
    return Calibration(threshold=float(thresholds[best]), policy=policy, value=float(value))
