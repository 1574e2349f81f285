"""Tests of the board pictures in pcbsiam.viz.overlay: data show's rows and the inspection overlay."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_rgb
from matplotlib.patches import Rectangle
from PIL import Image

from pcbsiam.deploy.inspector import Inspection, TileResult
from pcbsiam.viz.overlay import TRUTH_COLOUR, board_pairs_figure, plot_board_pairs, render_overlay
from tests.conftest import board

BOXES = np.array([[10, 2, 30, 14, 1], [60, 40, 90, 70, 5]])


def _pairs(n: int, size: int = 128) -> list[tuple[np.ndarray, np.ndarray, np.ndarray, str]]:
    # white boards (DeepPCB's background): a frameless image would not show where it ends
    return [(255 - board(2 * k, size), 255 - board(2 * k + 1, size), BOXES, f"{20085000 + k}") for k in range(n)]


def test_board_rows_are_headed_and_spaced(tmp_path: Path) -> None:
    fig = board_pairs_figure(_pairs(3))
    FigureCanvasAgg(fig).draw()
    renderer = fig.canvas.get_renderer()
    rows = fig.subfigs
    assert len(rows) == 3
    for k, row in enumerate(rows):
        assert row._suptitle.get_text() == f"{20085000 + k}: 2 annotated defects"
        heading = row._suptitle.get_window_extent(renderer)
        images = [ax.get_window_extent(renderer) for ax in row.axes]
        titles = [ax.title.get_window_extent(renderer) for ax in row.axes]
        assert all(heading.y0 >= b.y1 for b in images + titles)  # above its own row
        for other in rows[:k]:  # the rows above end well above this heading (display y grows upwards)
            for ax in other.axes:
                assert ax.get_window_extent(renderer).y0 - heading.y1 >= 0.15 * fig.dpi
        for ax in row.axes:  # each image is framed, so a white board's edge shows
            assert ax.axison and all(s.get_visible() for s in ax.spines.values())
    tested_axes = rows[0].axes[1]
    assert sum(isinstance(p, Rectangle) for p in tested_axes.patches) == len(BOXES)
    assert all(t.get_clip_on() for t in tested_axes.texts)  # box labels never spill onto a heading
    path = plot_board_pairs(_pairs(1), tmp_path / "one.png")
    with Image.open(path) as im:
        assert im.format == "PNG"


def test_board_rows_refuse_nothing_to_draw() -> None:
    import pytest

    with pytest.raises(ValueError, match="at least one"):
        board_pairs_figure([])


def _inspection(size: int = 256, tile: int = 128) -> Inspection:
    tiles = [
        TileResult(y, x, tile, tile, float(0.2 + (x + y) / (4 * size)), x == 0 and y == 0)
        for y in range(0, size, tile)
        for x in range(0, size, tile)
    ]
    return Inspection(True, 0.5, {"dy": 0, "dx": 0, "score": 1.0}, tiles, (size, size), score_name="L2 distance")


def _white_margins(png: bytes) -> tuple[int, int, int, int]:
    """Rows (top, bottom) and columns (left, right) of pure white at the picture's edges."""
    a = np.asarray(Image.open(io.BytesIO(png)).convert("L"))
    rows, cols = (a >= 250).all(1), (a >= 250).all(0)
    return int(np.argmax(~rows)), int(np.argmax(~rows[::-1])), int(np.argmax(~cols)), int(np.argmax(~cols[::-1]))


def test_overlay_has_no_blank_margin(tmp_path: Path) -> None:
    for h, w in ((256, 256), (256, 512), (512, 256)):
        tested = np.full((h, w), 30, np.uint8)  # a dark board: the margins are the only white
        png = render_overlay(tested, _inspection(min(h, w)))
        assert max(_white_margins(png)) <= 8, (h, w, _white_margins(png))
    path = render_overlay(board(3, 256), _inspection(), tmp_path / "o.png")
    assert path == tmp_path / "o.png" and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_overlay_draws_the_annotated_boxes_dashed(monkeypatch) -> None:  # noqa: ANN001
    import matplotlib.figure

    drawn = []
    real = matplotlib.figure.Figure.savefig
    monkeypatch.setattr(
        matplotlib.figure.Figure, "savefig", lambda fig, *a, **k: drawn.append(fig) or real(fig, *a, **k)
    )
    tested = board(4, 256)
    render_overlay(tested, _inspection())
    render_overlay(tested, _inspection(), truth=BOXES)
    plain, annotated = (fig.axes[0] for fig in drawn)

    def dashed(ax) -> list[Rectangle]:  # noqa: ANN001
        return [p for p in ax.patches if isinstance(p, Rectangle) and p.get_linestyle() == "--"]

    assert dashed(plain) == []
    boxes = dashed(annotated)
    assert len(boxes) == len(BOXES)
    assert all(np.allclose(p.get_edgecolor()[:3], to_rgb(TRUTH_COLOUR)) for p in boxes)
    assert sorted((p.get_x() + 0.5, p.get_y() + 0.5, p.get_width(), p.get_height()) for p in boxes) == [
        (10, 2, 20, 12),
        (60, 40, 30, 30),
    ]
    assert "2 annotated defects" in annotated.get_title() and "annotated" not in plain.get_title()
