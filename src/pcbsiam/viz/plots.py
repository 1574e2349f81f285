"""Figures: score histograms, ROC curves and learning curves, written as PNG files.

Every function builds its own :class:`matplotlib.figure.Figure` (no pyplot global state, so it is
safe to call from several threads), writes the PNG atomically through
:func:`pcbsiam.io.atomic_path`, and returns the path written.

Learning-curve functions read ``metrics.jsonl`` records: ``{"kind": "step", "step", "epoch",
"loss", "loss_<part>" for each part the objective's loss has}`` and ``{"kind": "epoch", "epoch", "val_accuracy",
"val_auroc", "train_loss"}``. Records of other kinds and missing or non-numeric values are
ignored; when a step or epoch appears twice (a resumed run), the last record wins.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from numpy.typing import ArrayLike

from pcbsiam.evaluation.metrics import _as_scores_labels, roc_auc, roc_curve
from pcbsiam.io import atomic_path

#: Legend labels of the loss parts objectives report (``loss_<part>`` in metrics.jsonl).
LOSS_LABELS = {"triplet": "triplet loss", "ce": "cross-entropy loss", "bce": "binary cross-entropy"}

__all__ = [
    "loss_curves",
    "plot_distance_histograms",
    "plot_learning_curve_grid",
    "plot_learning_curves",
    "plot_roc",
    "wants_log_counts",
]

DPI = 150
_COLORS = {"defect_free": "tab:blue", "defective": "tab:red", "threshold": "black"}


def _save(fig: Figure, path: str | Path, dpi: int = DPI) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    return path


def plot_distance_histograms(
    scores: ArrayLike,
    labels: ArrayLike,
    threshold: float | None,
    path: str | Path,
    title: str | None = None,
    xlabel: str = "L2 distance",
    bins: int = 50,
    density: bool = False,
    log_counts: bool | None = None,
) -> Path:
    """Overlaid histograms of the scores of defect-free and defective items, with the threshold.

    Under strong imbalance (thousands of defect-free patches in one bin, e.g. the classical
    method's 0 defect pixels, beside a few dozen defective ones) a linear axis flattens the smaller
    class to nothing; the count axis is then logarithmic (see ``log_counts``).

    Args:
        scores: (N,) scores.
        labels: (N,) labels in {0, 1}, 1 = defective.
        threshold: drawn as a vertical line labelled in the legend; ``None`` draws no line.
        path: PNG file to write.
        title: figure title.
        xlabel: x-axis label.
        bins: number of bins, shared by both classes.
        density: normalise each histogram to unit area (useful under strong class imbalance).
        log_counts: logarithmic count axis; ``None`` chooses it when the tallest bin is more than
            :data:`LOG_RATIO` times the tallest bin of the other class (see :func:`wants_log_counts`).

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    s, y = _as_scores_labels(scores, labels)
    lo, hi = float(s.min()), float(s.max())
    if threshold is not None:
        lo, hi = min(lo, float(threshold)), max(hi, float(threshold))
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    edges = np.linspace(lo, hi, bins + 1)

    classes = ((0, "defect-free", _COLORS["defect_free"]), (1, "defective", _COLORS["defective"]))
    heights = [np.histogram(s[y == v], bins=edges, density=density)[0] for v, _, _ in classes if np.any(y == v)]
    log = wants_log_counts(heights) if log_counts is None else log_counts

    fig = Figure(figsize=(6.4, 4.2), layout="constrained")
    ax = fig.add_subplot()
    for value, name, color in classes:
        part = s[y == value]
        if part.size:
            label = f"{name} (n={part.size})"
            ax.hist(part, bins=edges, density=density, log=log, alpha=0.55, color=color, label=label)
    if log:
        ax.set_ylim(bottom=_log_floor(heights, density))
    if threshold is not None:
        ax.axvline(
            float(threshold),
            color=_COLORS["threshold"],
            linestyle="--",
            linewidth=1.5,
            label=f"threshold = {float(threshold):.4g}",
        )
    ax.set_xlabel(xlabel)
    ax.set_ylabel(("density" if density else "count") + (" (log scale)" if log else ""))
    if title:
        ax.set_title(title)
    ax.legend(frameon=False)
    return _save(fig, path)


#: Ratio of the tallest bin to the other class's tallest bin above which the count axis is logarithmic.
LOG_RATIO = 10.0


def wants_log_counts(heights: Sequence[np.ndarray]) -> bool:
    """Whether histograms of these bin heights need a logarithmic count axis to show every class.

    Args:
        heights: one (B,) array of bin heights per class.

    Returns:
        True when the tallest bin overall is more than :data:`LOG_RATIO` times the tallest bin of
        some other non-empty class, whose bars a linear axis would flatten.
    """
    peaks = [float(h.max()) for h in heights if h.size and h.max() > 0]
    return len(peaks) > 1 and max(peaks) > LOG_RATIO * min(peaks)


def _log_floor(heights: Sequence[np.ndarray], density: bool) -> float:
    """Bottom of a log count axis: just under one item (counts) or the smallest non-zero height."""
    if not density:
        return 0.5
    positive = [float(h[h > 0].min()) for h in heights if np.any(h > 0)]
    return 0.5 * min(positive) if positive else 1e-3


def plot_roc(
    curves: Mapping[str, tuple[ArrayLike, ArrayLike]],
    path: str | Path,
    title: str | None = None,
) -> Path:
    """ROC curves of one or several detectors, with their AUROC in the legend.

    Args:
        curves: ``{name: (scores, labels)}``; scores (N,) and labels (N,) in {0, 1}, one curve each.
            For a single curve pass ``{"model": (scores, labels)}``.
        path: PNG file to write.
        title: figure title.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    if not curves:
        raise ValueError("plot_roc needs at least one curve: pass {name: (scores, labels)}.")
    fig = Figure(figsize=(5.0, 5.0), layout="constrained")
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1, label="chance")
    for name, (scores, labels) in curves.items():
        fpr, tpr, _ = roc_curve(scores, labels)
        auc = roc_auc(scores, labels)
        auc_text = "n/a, one class" if math.isnan(auc) else f"{auc:.4f}"
        ax.plot(fpr, tpr, linewidth=1.8, label=f"{name} (AUROC = {auc_text})")
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(-0.01, 1.01)
    ax.set_aspect("equal")
    ax.set_xlabel("false alarm rate (FPR)")
    ax.set_ylabel("defect recall (TPR)")
    if title:
        ax.set_title(title)
    ax.legend(loc="lower right", frameon=False)
    return _save(fig, path)


def _is_real(v: object) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)


def _series(records: Iterable[Mapping[str, Any]], kind: str, x_key: str, y_key: str) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) of records of ``kind`` having numeric ``x_key`` and ``y_key``; sorted by x, last wins."""
    points: dict[float, float] = {}
    for rec in records:
        if rec.get("kind") != kind:
            continue
        x, y = rec.get(x_key), rec.get(y_key)
        if _is_real(x) and _is_real(y) and math.isfinite(y) and math.isfinite(x):
            points[float(x)] = float(y)
    xs = np.array(sorted(points), dtype=np.float64)
    ys = np.array([points[x] for x in xs], dtype=np.float64)
    return xs, ys


def _smooth(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing moving average of (N,) ``values`` over ``window`` points (fewer at the start)."""
    if window <= 1 or values.size == 0:
        return values
    c = np.concatenate([[0.0], np.cumsum(values)])
    idx = np.arange(1, values.size + 1)
    start = np.maximum(idx - window, 0)
    return (c[idx] - c[start]) / (idx - start)


def _no_data(ax: Axes, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="grey")


def loss_curves(records: Iterable[Mapping[str, Any]]) -> list[tuple[str, str, str]]:
    """(record key, legend label, colour) of each loss curve: the total and the parts the run's loss
    reported (none when it has one part: that part is the total)."""
    parts = list(dict.fromkeys(k for r in records if r.get("kind") == "step" for k in r if k.startswith("loss_")))
    if len(parts) == 1:
        parts = []
    colours = ("tab:orange", "tab:green", "tab:blue", "tab:purple")
    return [("loss", "total loss", "black")] + [
        (k, LOSS_LABELS.get(k.removeprefix("loss_"), k.removeprefix("loss_")), colours[i % len(colours)])
        for i, k in enumerate(parts)
    ]


def plot_learning_curves(
    records: Sequence[Mapping[str, Any]],
    path: str | Path,
    title: str | None = None,
    smoothing: int | None = None,
) -> Path:
    """Two panels: training losses over steps (raw, faint, and smoothed) and validation metrics over epochs.

    Args:
        records: ``metrics.jsonl`` records (see the module docstring).
        path: PNG file to write.
        title: figure title.
        smoothing: moving-average window in steps; default about 2 % of the steps (at least 1).

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    fig = Figure(figsize=(11.0, 4.2), layout="constrained")
    ax_loss, ax_val = fig.subplots(1, 2)

    any_loss = False
    for key, label, color in loss_curves(records):
        # the step count over the whole run (``step`` restarts every epoch)
        step_key = "global_step" if any("global_step" in r for r in records) else "step"
        x, y = _series(records, "step", step_key, key)
        if x.size == 0:
            continue
        any_loss = True
        window = smoothing if smoothing is not None else max(1, round(x.size / 50))
        ax_loss.plot(x, y, color=color, alpha=0.2, linewidth=0.8)
        ax_loss.plot(x, _smooth(y, window), color=color, linewidth=1.8, label=label)
    if any_loss:
        ax_loss.legend(frameon=False)
    else:
        _no_data(ax_loss, "no step records")
    ax_loss.set_xlabel("step")
    ax_loss.set_ylabel("training loss")
    ax_loss.set_title("Training loss")

    any_val = False
    for key, label, color in (
        ("val_accuracy", "validation accuracy", "tab:blue"),
        ("val_auroc", "validation AUROC", "tab:purple"),
    ):
        x, y = _series(records, "epoch", "epoch", key)
        if x.size == 0:
            continue
        any_val = True
        ax_val.plot(x, y, marker="o", markersize=3, color=color, linewidth=1.8, label=label)
    x, y = _series(records, "epoch", "epoch", "train_accuracy")
    if not any_val and x.size:  # trained on every item (data.val_fraction=0): the calibration accuracy only
        ax_val.plot(x, y, marker="o", markersize=3, color="tab:gray", linewidth=1.8, label="training accuracy")
        ax_val.set_title("No validation items: training accuracy")
        any_val = True
    if any_val:
        ax_val.legend(frameon=False, loc="lower right")
    else:
        _no_data(ax_val, "no epoch records")
    ax_val.set_xlabel("epoch")
    ax_val.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax_val.set_ylabel("validation metric")
    if not ax_val.get_title():
        ax_val.set_title("Validation")
    ax_val.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def plot_learning_curve_grid(
    panels: Mapping[str, Mapping[str, Sequence[Mapping[str, Any]]]],
    path: str | Path,
    title: str | None = None,
    metric: str = "val_accuracy",
    ylabel: str = "validation accuracy",
) -> Path:
    """One panel per experiment family, one line per variant: ``metric`` over epochs.

    Four families give the paper's 2x2 figure; in general the grid has two columns.

    Args:
        panels: ``{family: {variant: records}}``, e.g.
            ``{"Backbone": {"ResNet-18": [...], "ResNet-50": [...]}, "Loss": {...}}``.
        path: PNG file to write.
        title: figure title.
        metric: the epoch-record key to plot.
        ylabel: y-axis label.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    if not panels:
        raise ValueError("plot_learning_curve_grid needs at least one panel: {family: {variant: records}}.")
    n_cols = 2 if len(panels) > 1 else 1
    n_rows = math.ceil(len(panels) / n_cols)
    fig = Figure(figsize=(5.2 * n_cols, 3.8 * n_rows), layout="constrained")
    axes = np.atleast_1d(fig.subplots(n_rows, n_cols, squeeze=False).ravel())
    for ax, (family, variants) in zip(axes, panels.items(), strict=False):
        plotted = False
        for variant, records in variants.items():
            x, y = _series(records, "epoch", "epoch", metric)
            if x.size:
                ax.plot(x, y, marker="o", markersize=2.5, linewidth=1.6, label=variant)
                plotted = True
        if plotted:
            ax.legend(frameon=False, loc="lower right", fontsize="small")
        else:
            _no_data(ax, f"no '{metric}' records")
        ax.set_title(family)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    for ax in axes[len(panels) :]:
        ax.set_visible(False)
    if title:
        fig.suptitle(title)
    return _save(fig, path)
