"""Pictures of boards: a tested image beside its template with the defect boxes drawn."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from pcbsiam.data.defects import defect_name
from pcbsiam.io import atomic_path

BOX_COLOURS = ["#e41a1c", "#ff7f00", "#984ea3", "#4daf4a", "#377eb8", "#f781bf"]


def plot_board_pairs(pairs: list[tuple[np.ndarray, np.ndarray, np.ndarray, str]], path: str | Path) -> Path:
    """Draw rows of (template, tested with boxes) and write a PNG.

    Args:
        pairs: per row (tested (H, W) uint8, template (H, W) uint8, boxes (N, 5), title).
        path: PNG to write.
    """
    fig = Figure(figsize=(8, 4 * len(pairs)), layout="constrained")
    axes = fig.subplots(len(pairs), 2, squeeze=False)
    for row, (tested, template, boxes, title) in zip(axes, pairs, strict=True):
        row[0].imshow(template, cmap="gray", vmin=0, vmax=255)
        row[0].set_title(f"{title}: template")
        row[1].imshow(tested, cmap="gray", vmin=0, vmax=255)
        row[1].set_title(f"{title}: tested, {len(boxes)} defects")
        for x1, y1, x2, y2, kind in np.asarray(boxes).reshape(-1, 5).tolist():
            colour = BOX_COLOURS[(kind - 1) % len(BOX_COLOURS)]
            row[1].add_patch(Rectangle((x1 - 0.5, y1 - 0.5), x2 - x1, y2 - y1, fill=False, lw=1.5, ec=colour))
            row[1].text(x1, y1 - 3, defect_name(kind), color=colour, fontsize=7)
        for ax in row:
            ax.set_axis_off()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110)
    return Path(path)


def render_overlay(
    tested: np.ndarray,
    inspection,
    path: str | Path | None = None,
    title: str | None = None,
    score_label: str | None = None,
    truth: np.ndarray | None = None,
):
    """The tested board with each tile tinted by its score, defective tiles outlined in red, and the
    inspection's detections (if any) boxed in their type's colour and labelled ``<type> <confidence>``.

    Args:
        tested: (H, W) uint8 tested image.
        inspection: a :class:`pcbsiam.deploy.inspector.Inspection`.
        path: PNG to write; ``None`` returns the PNG bytes instead.
        score_label: what the tile scores are (default: the inspection's ``score_name``).
        truth: (G, 5) annotated rows ``x1 y1 x2 y2 type``, drawn thin, dashed and grey; ``None``: none.

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
    fig = Figure(figsize=(7, 7 * h / w + 0.6), layout="constrained")
    ax = fig.subplots()
    ax.imshow(tested, cmap="gray", vmin=0, vmax=255)
    for t in inspection.tiles:
        ax.add_patch(Rectangle((t.x - 0.5, t.y - 0.5), t.w, t.h, fc=cmap(norm(t.score)), alpha=0.28, lw=0))
    for t in inspection.tiles:
        if t.defective:
            ax.add_patch(Rectangle((t.x - 0.5, t.y - 0.5), t.w, t.h, fill=False, ec="red", lw=2))
    detections = inspection.detections
    _draw_boxes(ax, inspection.detection_rows(), truth, h)
    ax.set_xlim(-0.5, w - 0.5)  # boxes or labels at the border do not widen the view
    ax.set_ylim(h - 0.5, -0.5)
    sm = fig.colorbar(ScalarMappable(norm, cmap), ax=ax, fraction=0.046, pad=0.02)
    sm.ax.axhline(thr, color="black", lw=2)
    sm.set_label(f"{score_label} (threshold {thr:.3f}: black line)")
    verdict = "DEFECTIVE" if inspection.defective else "PASS"
    shift = inspection.shift
    n = len(detections)
    found = f"\n{n} detection{'' if n == 1 else 's'} (boxes by type)" if n else ""
    ax.set_title(
        title
        or f"{verdict}: {sum(t.defective for t in inspection.tiles)} of {len(inspection.tiles)} "
        f"tiles above threshold; shift dy={shift['dy']} dx={shift['dx']}{found}"
    )
    ax.set_axis_off()
    if path is None:
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=100)
        return buf.getvalue()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100)
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
