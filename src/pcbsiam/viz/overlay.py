"""Pictures of boards: a tested image beside its template with the defect boxes drawn."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from pcbsiam.data.defects import defect_name
from pcbsiam.io import atomic_path

BOX_COLOURS = ["#e41a1c", "#ff7f00", "#984ea3", "#4daf4a", "#377eb8", "#f781bf"]


def board_pairs_figure(pairs: list[tuple[np.ndarray, np.ndarray, np.ndarray, str]]) -> Figure:
    """One framed row per item: the template beside the tested image with its annotated boxes.

    Each row is a subfigure headed by the item's title, spaced from the row above, so that a
    heading never sits on the previous row's image (boards are white at their edges, and adjacent
    DeepPCB tiles continue one another). Box labels are clipped to their image.

    Args:
        pairs: per row (tested (H, W) uint8, template (H, W) uint8, boxes (N, 5) ``x1 y1 x2 y2 type``, title).

    Returns:
        The figure (not yet drawn).

    Raises:
        ValueError: ``pairs`` is empty.
    """
    if not pairs:
        raise ValueError("board_pairs_figure needs at least one (tested, template, boxes, title) row")
    fig = Figure(figsize=(8, 4.4 * len(pairs)), layout="constrained")
    fig.get_layout_engine().set(h_pad=0.12, hspace=0.0)
    rows = fig.subfigures(len(pairs), 1, hspace=0.04, squeeze=False).ravel()
    for sub, (tested, template, boxes, title) in zip(rows, pairs, strict=True):
        boxes = np.asarray(boxes).reshape(-1, 5)
        n = len(boxes)
        sub.suptitle(f"{title}: {n} annotated defect{'' if n == 1 else 's'}", fontweight="bold")
        left, right = sub.subplots(1, 2)
        for ax, image, name in ((left, template, "template"), (right, tested, "tested")):
            ax.imshow(image, cmap="gray", vmin=0, vmax=255)
            ax.set_title(name, fontsize="medium")
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():  # a frame: where a white board ends
                spine.set_color("0.6")
        h, w = tested.shape
        for x1, y1, x2, y2, kind in boxes.tolist():
            colour = BOX_COLOURS[(kind - 1) % len(BOX_COLOURS)]
            right.add_patch(Rectangle((x1 - 0.5, y1 - 0.5), x2 - x1, y2 - y1, fill=False, lw=1.5, ec=colour))
            above = y1 >= 0.04 * h  # room for the label above the box; otherwise it goes below it
            flush_right = x1 > 0.75 * w  # a label near the right edge ends at the box instead of starting there
            right.text(
                x2 - 0.5 if flush_right else x1 - 0.5,
                y1 - 3 if above else y2 + 2,
                defect_name(kind),
                color=colour,
                fontsize=7,
                ha="right" if flush_right else "left",
                va="bottom" if above else "top",
                clip_on=True,
            )
    return fig


def plot_board_pairs(pairs: list[tuple[np.ndarray, np.ndarray, np.ndarray, str]], path: str | Path) -> Path:
    """Draw rows of (template, tested with boxes) (see :func:`board_pairs_figure`) and write a PNG.

    Args:
        pairs: per row (tested (H, W) uint8, template (H, W) uint8, boxes (N, 5), title).
        path: PNG to write.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    fig = board_pairs_figure(pairs)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110)
    return Path(path)


def render_overlay(
    tested: np.ndarray,
    inspection,  # noqa: ANN001 - a pcbsiam.deploy.inspector.Inspection (not imported: the deploy path imports viz)
    path: str | Path | None = None,
    title: str | None = None,
    score_label: str | None = None,
    truth: np.ndarray | None = None,
) -> Path | bytes:
    """The tested board with each tile tinted by its score, defective tiles outlined in red, the
    inspection's detections (if any) boxed in their type's colour and labelled ``<type> <confidence>``,
    and the annotated defects (when known) as dashed grey boxes.

    The PNG is cropped to the drawing (title, board and colour bar), with no blank margin.

    Args:
        tested: (H, W) uint8 tested image.
        inspection: a :class:`pcbsiam.deploy.inspector.Inspection`.
        path: PNG to write; ``None`` returns the PNG bytes instead.
        title: figure title (default: the verdict, the tiles above threshold and the shift).
        score_label: what the tile scores are (default: the inspection's ``score_name``).
        truth: (G, 5) annotated boxes ``x1 y1 x2 y2 type`` of the tested image (a DeepPCB annotation,
            :func:`pcbsiam.data.deeppcb.parse_annotation`), drawn thin, dashed and grey by the same code
            as :func:`render_detections`; ``None``: none known.

    Returns:
        The path written, or the PNG bytes.
    """
    import io

    from matplotlib import colormaps
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    score_label = score_label or inspection.score_name
    thr = inspection.threshold
    scores = [t.score for t in inspection.tiles] or [0.0]
    low = min(min(scores), thr, 0.0)  # distances start at 0; logits may be negative
    top = max(max(scores), thr + 0.5 * abs(thr) + 1e-6)
    norm = Normalize(low, top)
    cmap = colormaps["RdYlGn_r"]
    h, w = tested.shape
    fig = Figure(figsize=(7, 7 * h / w), layout="constrained")
    ax = fig.subplots()
    ax.imshow(tested, cmap="gray", vmin=0, vmax=255)
    for t in inspection.tiles:
        ax.add_patch(Rectangle((t.x - 0.5, t.y - 0.5), t.w, t.h, fc=cmap(norm(t.score)), alpha=0.28, lw=0))
    for t in inspection.tiles:
        if t.defective:
            ax.add_patch(Rectangle((t.x - 0.5, t.y - 0.5), t.w, t.h, fill=False, ec="red", lw=2))
    _draw_boxes(ax, inspection.detection_rows(), truth, h)
    ax.set_xlim(-0.5, w - 0.5)  # boxes or labels at the border do not widen the view
    ax.set_ylim(h - 0.5, -0.5)
    sm = fig.colorbar(ScalarMappable(norm, cmap), ax=ax, fraction=0.046, pad=0.02)
    sm.ax.axhline(thr, color="black", lw=2)
    sm.set_label(f"{score_label} (threshold {thr:.3f}: black line)")
    verdict = "DEFECTIVE" if inspection.defective else "PASS"
    shift = inspection.shift
    lines = [
        f"{verdict}: {sum(t.defective for t in inspection.tiles)} of {len(inspection.tiles)} "
        f"tiles above threshold; shift dy={shift['dy']} dx={shift['dx']}"
    ]
    n = len(inspection.detections)
    if n:
        lines.append(f"{n} detection{'' if n == 1 else 's'} (boxes by type)")
    if truth is not None:
        g = len(np.asarray(truth).reshape(-1, 5))
        lines.append(f"{g} annotated defect{'' if g == 1 else 's'} (dashed grey boxes)")
    ax.set_title(title or "\n".join(lines))
    ax.set_axis_off()
    buf = io.BytesIO()
    # the board's aspect leaves the constrained layout's box taller or wider than the drawing: crop to it
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight", pad_inches=0.05)
    png = buf.getvalue()
    if path is None:
        return png
    with atomic_path(path) as tmp:
        tmp.write_bytes(png)
    return Path(path)


#: Line colour of annotated boxes in :func:`render_detections`: a mid grey, seen on copper and background alike.
TRUTH_COLOUR = "#808080"


def render_detections(
    tested: np.ndarray,
    detections: np.ndarray,
    out: str | Path | None = None,
    truth: np.ndarray | None = None,
) -> bytes:
    """The tested board with each detection boxed in its type's colour and labelled ``<type> <confidence>``.

    The picture is the board alone, with no margin, at least 640 px on its longer side.

    Args:
        tested: (H, W) uint8 tested image.
        detections: (N, 6) rows ``x1 y1 x2 y2 confidence type`` (x2, y2 exclusive), types 1..6.
        out: PNG file to write as well (atomically); ``None``: only return the bytes.
        truth: (G, 5) annotated rows ``x1 y1 x2 y2 type``, drawn thin and dashed; ``None``: none.

    Returns:
        The PNG bytes.
    """
    import io

    h, w = tested.shape
    scale = max(1.0, 640 / max(h, w))
    fig = Figure(figsize=(w * scale / 100, h * scale / 100), dpi=100)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.imshow(tested, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    ax.set_xlim(-0.5, w - 0.5)
    ax.set_ylim(h - 0.5, -0.5)
    ax.set_axis_off()
    _draw_boxes(ax, detections, truth, h)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    png = buf.getvalue()
    if out is not None:
        with atomic_path(out) as tmp:
            tmp.write_bytes(png)
    return png


def _draw_boxes(ax, detections: np.ndarray, truth: np.ndarray | None, height: int) -> None:  # noqa: ANN001
    """Draw annotated boxes (thin, dashed, grey) and detections (their type's colour, labelled
    ``<type> <confidence>``) on ``ax`` over an image ``height`` px high.

    Args:
        ax: matplotlib axes showing the image in pixel coordinates.
        detections: (N, 6) rows ``x1 y1 x2 y2 confidence type`` (x2, y2 exclusive), types 1..6.
        truth: (G, 5) annotated rows ``x1 y1 x2 y2 type``; ``None``: none.
        height: image height, px (where a label goes: above its box if there is room, else inside).
    """
    if truth is not None:
        for x1, y1, x2, y2, _ in np.asarray(truth, dtype=np.float64).reshape(-1, 5).tolist():
            ax.add_patch(Rectangle((x1 - 0.5, y1 - 0.5), x2 - x1, y2 - y1, fill=False, lw=1, ls="--", ec=TRUTH_COLOUR))
    for x1, y1, x2, y2, conf, kind in np.asarray(detections, dtype=np.float64).reshape(-1, 6).tolist():
        colour = BOX_COLOURS[(int(kind) - 1) % len(BOX_COLOURS)]
        ax.add_patch(Rectangle((x1 - 0.5, y1 - 0.5), x2 - x1, y2 - y1, fill=False, lw=1.5, ec=colour))
        above = y1 >= 0.04 * height  # room for the label above the box; otherwise it goes inside
        ax.text(
            x1 - 0.5,
            y1 - 1.5 if above else y1 + 0.5,
            f"{defect_name(int(kind))} {conf:.2f}",
            color="white",
            fontsize=7,
            va="bottom" if above else "top",
            bbox={"fc": colour, "ec": "none", "pad": 1.0, "alpha": 0.85},
            clip_on=True,
        )
