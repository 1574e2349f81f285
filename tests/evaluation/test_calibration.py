"""Tests of pcbsiam.evaluation.calibration on hand-worked cases."""

from __future__ import annotations

import time

import numpy as np
import pytest

from pcbsiam.errors import ConfigError
from pcbsiam.evaluation.calibration import Calibration, choose_threshold
from pcbsiam.evaluation.metrics import binary_metrics


def test_separable_case_accuracy() -> None:
    cal = choose_threshold([0.1, 0.2, 0.3, 0.4], [0, 0, 1, 1])
    assert isinstance(cal, Calibration)
    assert cal.threshold == pytest.approx(0.25)
    assert cal.value == 1.0
    assert cal.policy == "accuracy" and cal.warning is None


def test_tie_shared_by_both_labels_gets_one_verdict() -> None:
    # 0.5 is shared by a defect-free and a defective item: whichever side it falls on, one error.
    scores = [0.1, 0.5, 0.5, 0.9]
    labels = [0, 0, 1, 1]
    cal = choose_threshold(scores, labels)
    assert cal.value == pytest.approx(0.75)
    # Best candidates: 0.3 (flags both 0.5 items) and 0.7 (passes both); lower median -> 0.3.
    assert cal.threshold == pytest.approx(0.3)
    assert binary_metrics(scores, labels, cal.threshold)["accuracy"] == cal.value


def test_median_of_tied_candidates() -> None:
    scores = [0.0, 1.0, 2.0, 3.0, 4.0]
    labels = [0, 1, 0, 1, 1]
    # Accuracy per candidate: -1e-6 -> 3/5, 0.5 -> 4/5, 1.5 -> 3/5, 2.5 -> 4/5, 3.5 -> 3/5, 4+1e-6 -> 2/5.
    cal = choose_threshold(scores, labels)
    assert cal.value == pytest.approx(0.8)
    assert cal.threshold == pytest.approx(0.5)  # lower median of the tied {0.5, 2.5}
    # Three tied candidates {0.5, 2.5, 4.5}: the median, 2.5.
    cal = choose_threshold([0.0, 1.0, 2.0, 3.0, 4.0, 5.0], [0, 1, 0, 1, 0, 1])
    assert cal.threshold == pytest.approx(2.5)


def _brute_force(scores: np.ndarray, labels: np.ndarray, policy: str) -> tuple[float, float]:
    """Best value and the thresholds reaching it, by evaluating every candidate separately."""
    u = np.unique(scores)
    cands = np.r_[u[0] - 1e-6 * max(1, abs(u[0])), (u[:-1] + u[1:]) / 2, u[-1] + 1e-6 * max(1, abs(u[-1]))]
    key = {"accuracy": "accuracy", "f1": "f1", "balanced_accuracy": "balanced_accuracy"}[policy]
    values = np.array([binary_metrics(scores, labels, c)[key] for c in cands])
    best = np.flatnonzero(np.isclose(values, values.max(), rtol=0, atol=1e-12))
    return float(values.max()), float(cands[best[(best.size - 1) // 2]])


@pytest.mark.parametrize("policy", ["accuracy", "f1", "balanced_accuracy"])
@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_matches_brute_force(policy: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    labels = (rng.random(40) < 0.35).astype(int)
    labels[:2] = [0, 1]
    scores = np.round(rng.normal(size=40) + labels, 1)  # many ties across classes
    value, threshold = _brute_force(scores, labels, policy)
    cal = choose_threshold(scores, labels, policy)
    assert cal.value == pytest.approx(value)
    assert cal.threshold == pytest.approx(threshold)


def test_f1_and_balanced_accuracy() -> None:
    scores = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]
    labels = [0, 0, 0, 0, 1, 0]
    acc = choose_threshold(scores, labels, "accuracy")
    assert acc.value == pytest.approx(5 / 6)
    f1 = choose_threshold(scores, labels, "f1")
    # Only flagging exactly {0.5} is impossible; best F1 = 2/3 by flagging {0.5, 0.6} (threshold 0.45).
    assert f1.threshold == pytest.approx(0.45) and f1.value == pytest.approx(2 / 3)
    bal = choose_threshold(scores, labels, "balanced_accuracy")
    # threshold 0.45: recall 1, specificity 4/5 -> 0.9 (the best).
    assert bal.threshold == pytest.approx(0.45) and bal.value == pytest.approx(0.9)


def test_recall_policy_hand_case() -> None:
    scores = [0.1, 0.2, 0.3, 0.35, 0.6, 0.7, 0.8, 0.9]
    labels = [0, 0, 1, 0, 1, 1, 1, 1]
    # Recall >= 0.8 of 5 defectives allows missing one: the highest such threshold is 0.475
    # (between 0.35 and 0.6), missing the defective at 0.3 but with no false alarm.
    cal = choose_threshold(scores, labels, "recall:0.8")
    assert cal.threshold == pytest.approx(0.475)
    assert cal.value == pytest.approx(0.8)
    # Recall 1.0 must keep the defective at 0.3: threshold 0.25, one false alarm (0.35).
    cal = choose_threshold(scores, labels, "recall:1.0")
    assert cal.threshold == pytest.approx(0.25)
    m = binary_metrics(scores, labels, cal.threshold)
    assert m["recall"] == 1.0 and m["confusion"]["fp"] == 1


def test_recall_policy_rounding() -> None:
    labels = np.r_[np.zeros(10, int), np.ones(200, int)]
    scores = np.r_[np.zeros(10), np.arange(1, 201, dtype=float)]
    cal = choose_threshold(scores, labels, "recall:0.995")  # 199 of 200 exactly
    assert cal.value == pytest.approx(0.995)
    assert cal.threshold == pytest.approx(1.5)


def test_single_class_warns() -> None:
    with pytest.warns(UserWarning, match="defect-free"):
        cal = choose_threshold([0.1, 0.4, 0.2], [0, 0, 0])
    assert cal.threshold > 0.4 and cal.threshold == pytest.approx(0.4, abs=1e-5)
    assert cal.warning is not None and "defect-free" in cal.warning
    assert binary_metrics([0.1, 0.4, 0.2], [0, 0, 0], cal.threshold)["false_alarm_rate"] == 0.0
    with pytest.warns(UserWarning, match="defective"):
        cal = choose_threshold([0.1, 0.4, 0.2], [1, 1, 1], "f1")
    assert cal.threshold < 0.1 and cal.threshold == pytest.approx(0.1, abs=1e-5)
    assert cal.value == 1.0 and cal.warning is not None


def test_errors() -> None:
    with pytest.raises(ValueError, match="No scores"):
        choose_threshold([], [])
    with pytest.raises(ValueError, match="2 of 3 scores are NaN"):
        choose_threshold([np.nan, 0.1, np.nan], [0, 1, 0])
    with pytest.raises(ValueError, match="valid policies are"):
        choose_threshold([0.1, 0.2], [0, 1], "precision")
    with pytest.raises(ValueError, match="between 0 and 1"):
        choose_threshold([0.1, 0.2], [0, 1], "recall:1.5")
    with pytest.raises(ConfigError, match="above 0"):  # recall 0 would flag nothing at all
        choose_threshold([0.1, 0.2], [0, 1], "recall:0")


def test_all_equal_scores_mixed_labels() -> None:
    cal = choose_threshold([0.3, 0.3, 0.3], [0, 0, 1])
    assert cal.threshold > 0.3 and cal.value == pytest.approx(2 / 3)


@pytest.mark.parametrize("policy", ["accuracy", "recall:0.99"])
def test_large_input_is_fast(policy: str) -> None:
    rng = np.random.default_rng(0)
    n = 200_000
    labels = (rng.random(n) < 0.2).astype(int)
    scores = rng.normal(size=n) + 2.0 * labels
    start = time.perf_counter()
    cal = choose_threshold(scores, labels, policy)
    assert time.perf_counter() - start < 1.0
    m = binary_metrics(scores, labels, cal.threshold)
    if policy == "accuracy":
        assert m["accuracy"] == pytest.approx(cal.value)
        # Bayes-optimal threshold for these Gaussians and priors: 1 + ln(4) / 2 = 1.69.
        assert 1.4 < cal.threshold < 2.0
    else:
        assert m["recall"] >= 0.99
