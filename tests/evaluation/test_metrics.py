"""Tests of pcbsiam.evaluation.metrics against scikit-learn and hand-worked cases."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
from sklearn import metrics as skm

from pcbsiam.evaluation.metrics import (
    binary_metrics,
    confusion,
    format_mean_std,
    grouped_metrics,
    mean_std,
    predict_defective,
    recall_by_type,
    roc_auc,
    roc_curve,
)


def _tied_data(seed: int, n: int = 300, p: float = 0.3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = (rng.random(n) < p).astype(int)
    # Rounded scores give many ties, several shared by both classes.
    scores = np.round(rng.normal(size=n) + 1.2 * labels, 1)
    return scores, labels


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_roc_matches_sklearn_with_ties(seed: int) -> None:
    scores, labels = _tied_data(seed)
    assert roc_auc(scores, labels) == pytest.approx(skm.roc_auc_score(labels, scores), abs=1e-12)
    fpr, tpr, thr = roc_curve(scores, labels)
    sk_fpr, sk_tpr, sk_thr = skm.roc_curve(labels, scores, drop_intermediate=False)
    np.testing.assert_allclose(fpr, sk_fpr)
    np.testing.assert_allclose(tpr, sk_tpr)
    assert thr[0] == np.inf
    np.testing.assert_allclose(thr[1:], sk_thr[1:])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_roc_matches_plain_counting_with_ties(seed: int) -> None:
    scores, labels = _tied_data(seed, n=120)
    pos, neg = scores[labels == 1], scores[labels == 0]
    # AUROC = P(defective above defect-free) + half P(tie), counted over all pairs.
    wins = sum(float(p > q) + 0.5 * float(p == q) for p in pos for q in neg)
    assert roc_auc(scores, labels) == pytest.approx(wins / (pos.size * neg.size), abs=1e-12)
    fpr, tpr, thr = roc_curve(scores, labels)
    assert fpr.size == np.unique(scores).size + 1 and np.all(np.diff(thr) < 0)
    for f, t, th in zip(fpr, tpr, thr, strict=True):
        assert (f, t) == (pytest.approx(np.mean(neg >= th)), pytest.approx(np.mean(pos >= th)))


def test_roc_auc_hand_case_with_tie() -> None:
    # One defective/defect-free pair tied at 0.5 counts half: (3 + 0.5) / 4.
    assert roc_auc([0.1, 0.5, 0.5, 0.9], [0, 0, 1, 1]) == pytest.approx(0.875)


def test_roc_single_class_is_nan_without_error() -> None:
    assert math.isnan(roc_auc([0.1, 0.2], [0, 0]))
    assert math.isnan(roc_auc([0.1, 0.2], [1, 1]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # documented as silent
        fpr, tpr, _ = roc_curve([0.1, 0.2], [0, 0])
        assert math.isnan(roc_auc([0.3, 0.1], [1, 1]))
    assert np.isnan(tpr).all() and not np.isnan(fpr).any()


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_binary_metrics_match_sklearn(seed: int) -> None:
    scores, labels = _tied_data(seed)
    threshold = 0.5
    m = binary_metrics(scores, labels, threshold)
    pred = (scores > threshold).astype(int)
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(labels, pred))
    assert m["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(labels, pred))
    assert m["precision"] == pytest.approx(skm.precision_score(labels, pred, zero_division=0))
    assert m["recall"] == pytest.approx(skm.recall_score(labels, pred, zero_division=0))
    assert m["f1"] == pytest.approx(skm.f1_score(labels, pred, zero_division=0))
    assert m["auroc"] == pytest.approx(skm.roc_auc_score(labels, scores))
    tn, fp, fn, tp = skm.confusion_matrix(labels, pred, labels=[0, 1]).ravel()
    assert m["confusion"] == {"tn": tn, "fp": fp, "fn": fn, "tp": tp}
    assert m["false_alarm_rate"] == pytest.approx(fp / (fp + tn))
    assert (m["n"], m["n_defective"], m["n_defect_free"]) == (300, labels.sum(), 300 - labels.sum())
    assert m["threshold"] == 0.5
    json.dumps(m, allow_nan=False)  # plain Python numbers only
    assert type(m["n"]) is int and type(m["accuracy"]) is float


def test_binary_metrics_zero_division_and_single_class() -> None:
    # No predicted defectives and no true defectives: precision/recall/f1 are 0.0, AUROC undefined.
    m = binary_metrics([0.1, 0.2, 0.3], [0, 0, 0], threshold=1.0)
    assert m["precision"] == m["recall"] == m["f1"] == 0.0
    assert m["accuracy"] == 1.0 and m["balanced_accuracy"] == 1.0
    assert m["auroc"] is None
    json.dumps(m, allow_nan=False)


def test_threshold_rule_is_strictly_above() -> None:
    assert predict_defective([0.2, 0.5, 0.7], 0.5).tolist() == [False, False, True]
    assert binary_metrics([0.5], [1], 0.5)["confusion"] == {"tn": 0, "fp": 0, "fn": 1, "tp": 0}


def test_input_validation() -> None:
    with pytest.raises(ValueError, match="No scores"):
        binary_metrics([], [], 0.5)
    with pytest.raises(ValueError, match="1 of 2 scores are NaN"):
        roc_auc([0.1, np.nan], [0, 1])
    with pytest.raises(ValueError, match="same length"):
        roc_auc([0.1, 0.2], [0])
    with pytest.raises(ValueError, match="Labels must be 0"):
        roc_auc([0.1, 0.2], [0, 2])


def test_confusion_counts() -> None:
    c = confusion(np.array([True, True, False, False, True]), np.array([1, 0, 1, 0, 1]))
    assert c == {"tn": 1, "fp": 1, "fn": 1, "tp": 2}
    assert all(type(v) is int for v in c.values())
    assert confusion([1, 1], [1, 1]) == {"tn": 0, "fp": 0, "fn": 0, "tp": 2}
    assert confusion([], []) == {"tn": 0, "fp": 0, "fn": 0, "tp": 0}
    with pytest.raises(ValueError, match="same length"):
        confusion([True], [1, 0])


def test_grouped_metrics_and_recall_by_type() -> None:
    scores = np.array([0.1, 0.9, 0.8, 0.2, 0.7, 0.3])
    labels = np.array([0, 1, 1, 1, 0, 1])
    groups = np.array(["b", "a", "a", "b", "b", "a"])
    g = grouped_metrics(scores, labels, 0.5, groups)
    assert list(g) == ["a", "b"]
    assert g["a"] == {"accuracy": pytest.approx(2 / 3), "n": 3, "n_defective": 3}
    assert g["b"] == {"accuracy": pytest.approx(1 / 3), "n": 3, "n_defective": 1}
    types = np.array(["", "short", "open", "open", "", "short"])
    r = recall_by_type(scores, labels, 0.5, types)
    assert set(r) == {"short", "open"}  # defect-free items ignored
    assert r["short"] == {"recall": 0.5, "n": 2, "detected": 1}
    assert r["open"] == {"recall": 0.5, "n": 2, "detected": 1}


def test_mean_std_hand_case() -> None:
    runs = [
        {"accuracy": 0.90, "confusion": {"tp": 1, "fp": 3}, "name": "x", "auroc": None},
        {"accuracy": 0.94, "confusion": {"tp": 3, "fp": 3}, "name": "y", "auroc": 0.9},
        {"accuracy": 0.98, "confusion": {"tp": 5, "fp": 3}, "name": "z", "auroc": 0.8},
    ]
    agg = mean_std(runs)
    assert set(agg) == {"accuracy", "confusion"}  # strings and partly-None keys dropped
    assert agg["accuracy"]["mean"] == pytest.approx(0.94)
    assert agg["accuracy"]["std"] == pytest.approx(0.04)  # sample std, ddof=1
    assert agg["accuracy"]["n"] == 3
    assert agg["confusion"]["tp"] == {"mean": 3.0, "std": 2.0, "n": 3}
    assert agg["confusion"]["fp"] == {"mean": 3.0, "std": 0.0, "n": 3}
    assert mean_std([{"a": 1.5}]) == {"a": {"mean": 1.5, "std": 0.0, "n": 1}}
    with pytest.raises(ValueError):
        mean_std([])


def test_format_mean_std() -> None:
    assert format_mean_std(0.95423, 0.00312) == "95.42 ± 0.31"
    assert format_mean_std(0.12345, 0.001, percent=False) == "0.1235 ± 0.0010"
