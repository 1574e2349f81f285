"""Tests that pcbsiam.viz.plots writes PNG files that open."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pcbsiam.viz.plots import plot_distance_histograms, plot_learning_curve_grid, plot_learning_curves, plot_roc


def _check_png(path: Path) -> None:
    assert path.is_file() and path.stat().st_size > 0
    with Image.open(path) as im:
        assert im.format == "PNG"
        assert im.size[0] > 100 and im.size[1] > 100
    assert not list(path.parent.glob(f".{path.name}.*"))  # no temporary file left behind


def _records(n_epochs: int, offset: float = 0.0) -> list[dict]:
    recs: list[dict] = []
    step = 0
    for epoch in range(n_epochs):
        for _ in range(20):
            loss = 1.0 / (1 + step / 10)
            recs.append(
                {
                    "kind": "step",
                    "step": step,
                    "epoch": epoch,
                    "loss": loss,
                    "loss_triplet": loss * 0.6,
                    "loss_ce": loss * 0.4,
                }
            )
            step += 1
        recs.append(
            {
                "kind": "epoch",
                "epoch": epoch,
                "val_accuracy": 0.7 + offset + 0.02 * epoch,
                "val_auroc": 0.8 + 0.02 * epoch,
                "train_loss": 1.0 / (1 + epoch),
            }
        )
    return recs


def test_histograms_and_roc(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    labels = (rng.random(200) < 0.4).astype(int)
    scores = rng.normal(size=200) + 1.5 * labels
    p = plot_distance_histograms(scores, labels, 0.7, tmp_path / "hist.png", title="Distances")
    assert p == tmp_path / "hist.png"
    _check_png(p)
    p = plot_roc(
        {"siamese": (scores, labels), "classical": (scores + rng.normal(size=200), labels)},
        tmp_path / "sub" / "roc.png",
        title="ROC",
    )
    _check_png(p)


def test_learning_curves(tmp_path: Path) -> None:
    _check_png(plot_learning_curves(_records(5), tmp_path / "curves.png", title="run"))
    _check_png(plot_learning_curves([], tmp_path / "empty.png"))  # no data: still a figure


def test_learning_curve_grid(tmp_path: Path) -> None:
    panels = {
        "Backbone": {"ResNet-18": _records(4), "ResNet-50": _records(4, 0.05)},
        "Embedding size": {"64": _records(3), "128": _records(3, 0.01)},
        "Scales": {"1": _records(3)},
        "Loss": {"triplet": _records(2), "triplet + CE": _records(2, 0.03)},
    }
    _check_png(plot_learning_curve_grid(panels, tmp_path / "grid.png"))


def test_learning_curve_uses_the_run_wide_step(tmp_path, monkeypatch) -> None:  # noqa: ANN001
    import pcbsiam.viz.plots as plots

    seen = []
    real = plots._series
    monkeypatch.setattr(plots, "_series", lambda recs, kind, x, y: seen.append(x) or real(recs, kind, x, y))
    recs = [
        {"kind": "step", "epoch": e, "step": s, "global_step": 3 * e + s + 1, "loss": 1.0}
        for e in range(2)
        for s in range(3)
    ]
    plots.plot_learning_curves(recs, tmp_path / "c.png")
    assert "global_step" in seen
    x, _ = real(recs, "step", "global_step", "loss")
    assert len(x) == 6


def test_loss_curves_are_the_parts_the_loss_has() -> None:
    from pcbsiam.viz.plots import loss_curves

    triplet = [{"kind": "step", "loss": 1.0, "loss_triplet": 0.6, "loss_ce": 0.4}]
    assert [label for _, label, _ in loss_curves(triplet)] == ["total loss", "triplet loss", "cross-entropy loss"]
    pair = [{"kind": "step", "loss": 1.0, "loss_bce": 1.0}]  # one part: it is the total
    assert [key for key, _, _ in loss_curves(pair)] == ["loss"]


def _histogram_axes(monkeypatch, tmp_path: Path, scores, labels, **kwargs):  # noqa: ANN001, ANN202
    """The axes plot_distance_histograms drew (the figure is caught on its way to the file)."""
    import pcbsiam.viz.plots as plots

    caught = []
    real = plots._save
    monkeypatch.setattr(plots, "_save", lambda fig, path: caught.append(fig) or real(fig, path))
    _check_png(plot_distance_histograms(scores, labels, 0.5, tmp_path / "h.png", **kwargs))
    (fig,) = caught
    return fig.axes[0]


def test_histogram_counts_are_logarithmic_under_a_pile_at_zero(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    # the classical baseline on DeepPCB: ~1,640 defect-free patches with 0 defect pixels, a few dozen defective
    rng = np.random.default_rng(0)
    scores = np.concatenate([np.zeros(1640), rng.uniform(1, 50, 60), rng.uniform(20, 400, 40)])
    labels = np.concatenate([np.zeros(1700), np.ones(40)])
    ax = _histogram_axes(monkeypatch, tmp_path, scores, labels)
    assert ax.get_yscale() == "log"
    assert "log" in ax.get_ylabel()
    assert ax.get_ylim()[0] < 1 < 1640 < ax.get_ylim()[1]  # a single defective patch in a bin shows, as does the pile


def test_histogram_counts_stay_linear_for_comparable_classes(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    rng = np.random.default_rng(1)
    labels = (rng.random(400) < 0.5).astype(int)
    scores = rng.normal(size=400) + 2.0 * labels
    assert _histogram_axes(monkeypatch, tmp_path, scores, labels).get_yscale() == "linear"
    forced = _histogram_axes(monkeypatch, tmp_path, scores, labels, log_counts=True)
    assert forced.get_yscale() == "log"


def test_wants_log_counts() -> None:
    from pcbsiam.viz.plots import wants_log_counts

    assert wants_log_counts([np.array([1640, 3, 0]), np.array([2, 5, 4])])
    assert not wants_log_counts([np.array([40, 30]), np.array([10, 20])])
    assert not wants_log_counts([np.array([1640, 3])])  # one class: nothing to flatten


def test_learning_curves_of_a_run_without_validation_items_show_its_training_accuracy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pcbsiam.viz.plots as plots

    titles: list[str] = []
    save = plots._save

    def keep_titles(fig, path):  # noqa: ANN001, ANN202
        titles.extend(ax.get_title() for ax in fig.axes)
        return save(fig, path)

    monkeypatch.setattr(plots, "_save", keep_titles)
    records = [{"kind": "step", "epoch": 0, "step": s, "global_step": s, "loss": 1.0 / (s + 1)} for s in range(4)]
    records += [
        {"kind": "epoch", "epoch": e, "train_accuracy": 0.9 + e / 100, "val_accuracy": None, "val_auroc": None}
        for e in range(2)
    ]
    _check_png(plot_learning_curves(records, tmp_path / "curves.png"))
    assert "No validation items: training accuracy" in titles
