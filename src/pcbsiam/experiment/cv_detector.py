"""The learned detector beside a cross-validation's tile model, fold by fold.

A tile model misses some defects a box detector finds, and the other way round (a few-px mousebite is a
blob the detector's candidates see; a defect its candidates cut badly is a tile the tile model flags). This
module measures both, and both together, on the folds of a ``pcbsiam cv`` folder. For each finished fold it
trains the learned detector's verifier on the fold's training boards (every group but the held-out one,
``fold-<group>/detector/``), detects the held-out boards (``fold-<group>/detections/<id>.txt``, DeepPCB result
files) and scores every protocol patch: a patch's detector score is the largest confidence of the detections with
at least half of their box inside it (the protocol's own rule for a defective patch, applied to detections), 0
without one. ``fold-<group>/detector.npz`` keeps those scores in the fold's patch order. Each step is skipped when
its file exists, so the folds can span several sessions.

The report (``OUT/detector.json``, ``OUT/detector.md``) pools the folds that have detector scores: the tile
model at its out-of-group threshold (accuracy policy; chosen on the other folds' held-out scores, as in
``cv.md``), the detector (a detection at the verifier's 0.5 cut), and either of them. Given the boards, it also
scores the detections as boxes by DeepPCB's own protocol (:func:`pcbsiam.evaluation.detection.evaluate_detections`),
per held-out design and pooled over the folds: each board judged by the one detector that never saw its design.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pcbsiam.data.deeppcb import read_detections, write_detections
from pcbsiam.data.images import load_gray
from pcbsiam.data.protocol import held_boxes, label_patch, tile_grid
from pcbsiam.data.records import BoardPair
from pcbsiam.data.sources import read_boards
from pcbsiam.errors import ConfigError, DataError
from pcbsiam.evaluation.detection import evaluate_detections
from pcbsiam.experiment.cv import figures_at, fold_dir, held_out, out_of_group_thresholds
from pcbsiam.io import atomic_path, write_json, write_text

__all__ = [
    "DetectorFoldSettings",
    "box_figures",
    "detector_patch_scores",
    "detector_report",
    "run_cv_detector",
    "summarise_detector",
]

log = logging.getLogger(__name__)

#: The protocol's patch side (DeepPCB-Cls: 128 px, non-overlapping).
PATCH = 128
#: Stricter cuts on the detections' confidence at which "either" is also reported.
EITHER_CUTS = (0.9, 0.99)


@dataclass(frozen=True)
class DetectorFoldSettings:
    """How each fold's detector is trained and applied: ``train-detector``'s defaults, and the views and finer
    band of docs/RESULTS.md's recommended detection.

    Attributes:
        epochs: passes over the candidate windows.
        seed: training seed.
        views: test-time views of each candidate.
        fine_band: the finer band's candidates (0: none).
        device: where the verifier trains and runs.
    """

    epochs: int = 6
    seed: int = 0
    views: int = 4
    fine_band: int = 1
    device: str = "cpu"


def detector_patch_scores(
    pairs: Sequence[BoardPair], detections: Sequence[np.ndarray], shapes: Sequence[tuple[int, int]]
) -> tuple[np.ndarray, np.ndarray]:
    """The detector's score and the protocol label of every kept patch of ``pairs``, in the protocol's order.

    Args:
        pairs: annotated boards.
        detections: per board (N, 6) rows ``x1 y1 x2 y2 confidence type``.
        shapes: per board (H, W).

    Returns:
        (n,) float64 scores (the largest confidence of the detections with at least half of their box inside the
        patch, 0 without one) and (n,) int64 labels (1 defective), over the patches the protocol keeps.
    """
    scores, labels = [], []
    for pair, det, (h, w) in zip(pairs, detections, shapes, strict=True):
        det = np.asarray(det, dtype=np.float64).reshape(-1, 6)
        for y, x, ph, pw in tile_grid(h, w, PATCH).tolist():
            label, _ = label_patch(pair.boxes, y, x, ph, pw)
            if label < 0:
                continue
            inside = held_boxes(det, y, x, ph, pw)
            scores.append(float(det[inside, 4].max()) if inside.any() else 0.0)
            labels.append(label)
    return np.asarray(scores, dtype=np.float64), np.asarray(labels, dtype=np.int64)


def _train(run: Path, train_pairs: Sequence[BoardPair], settings: DetectorFoldSettings, group: str) -> float:
    """Train the fold's verifier unless ``run/detector.pt`` exists; its training seconds."""
    from pcbsiam.detection.learned import WindowSpec, detector_record
    from pcbsiam.models.detector import VerifierConfig
    from pcbsiam.train.detector import DetectorTrainConfig, train_detector

    if not (run / "detector.pt").is_file():
        cfg = DetectorTrainConfig(epochs=settings.epochs, seed=settings.seed)
        record = {"holdout_groups": [group], "items": [p.name for p in train_pairs]}
        net_cfg = VerifierConfig(rule_types=True)
        train_detector(train_pairs, run, net_cfg, WindowSpec(), cfg, settings.device, None, record)
    facts = detector_record(run)
    return float(facts.get("sample_seconds", 0.0)) + float(facts.get("train_seconds", 0.0))


def detect_fold(
    out: Path,
    group: str,
    boards: Sequence[BoardPair],
    settings: DetectorFoldSettings,
    progress: Callable[[str, int], Callable[[int], None]] | None = None,
) -> dict[str, Any]:
    """Train, detect and score the fold that holds ``group`` out (each step skipped when done); its record.

    Raises:
        ConfigError: the fold has no held-out scores yet (run ``pcbsiam cv`` first).
        DataError: the detector's patches are not the fold's (another data set or split).
    """
    from pcbsiam.detection.learned import load_detector

    fold = fold_dir(out, group)
    if not (fold / "scores.npz").is_file():
        raise ConfigError(f"{fold} has no held-out scores: run `pcbsiam cv` for group {group} first")
    done = fold / "detector.json"
    if done.is_file() and (fold / "detector.npz").is_file():
        return json.loads(done.read_text())
    held = [p for p in boards if p.group == group]
    train_seconds = _train(fold / "detector", [p for p in boards if p.group != group], settings, group)
    detector = load_detector(fold / "detector", settings.device, views=settings.views, fine_band=settings.fine_band)
    results, found, shapes = fold / "detections", [], []
    tick = progress(group, len(held)) if progress else None
    t0 = time.perf_counter()
    for pair in held:
        tested, template = load_gray(pair.tested), load_gray(pair.template)
        rows = detector.detect(tested, template).as_array()
        found.append(read_detections(write_detections(results, pair.name, rows)))
        shapes.append(tested.shape)
        if tick:
            tick(1)
    seconds = time.perf_counter() - t0
    scores, labels = detector_patch_scores(held, found, shapes)
    with np.load(fold / "scores.npz") as data:
        if not np.array_equal(labels, data["labels"]):
            raise DataError(fold, "the held-out boards' patches differ from the fold's scores (another data set?)")
    with atomic_path(fold / "detector.npz") as tmp, open(tmp, "wb") as fh:
        np.savez(fh, detector=scores)
    record = {
        "group": group,
        "settings": asdict(settings),
        "train_seconds": round(train_seconds, 1),
        "detect_seconds": round(seconds, 1),
        "boards": len(held),
    }
    write_json(done, record)
    return record


def _row(pred: np.ndarray, labels: np.ndarray, defect: np.ndarray) -> dict[str, Any]:
    fig = figures_at(pred.astype(np.float64), labels, defect, 0.5)  # verdicts as 0/1 scores
    keys = ("accuracy", "balanced_accuracy", "recall", "false_alarm_rate", "confusion", "by_type")
    return {k: fig[k] for k in keys}


def _box_row(report: Any) -> dict[str, Any]:
    """The protocol's figures of a :class:`~pcbsiam.evaluation.detection.DetectionReport` kept in the report."""
    facts = report.to_dict()
    keep = ("n_images", "n_gt", "n_det", "n_correct", "precision", "recall", "f_score", "ap")
    return {k: facts[k] for k in keep} | {"recall_by_type": {t: v["recall"] for t, v in facts["per_type"].items()}}


def box_figures(out: Path, groups: Sequence[str], boards: Sequence[BoardPair]) -> dict[str, Any]:
    """The detections of the folds of ``groups`` scored as boxes by DeepPCB's protocol: per held-out group and
    pooled over them (each board's detections from the fold that held its group out).

    Returns:
        ``{"folds": {group: figures}, "pooled": figures}`` with P, R, F, AP and recall by type.
    """
    items, folds = [], {}
    for group in groups:
        results = fold_dir(out, group) / "detections"
        fold = [(p.name, p.boxes, read_detections(results / f"{p.name}.txt")) for p in boards if p.group == group]
        folds[group] = _box_row(evaluate_detections(fold))
        items += fold
    return {"folds": folds, "pooled": _box_row(evaluate_detections(items))}


def summarise_detector(out: str | Path, boards: Sequence[BoardPair] | None = None) -> dict[str, Any]:
    """Pooled figures of the folds with detector scores: the tile model at its out-of-group threshold (accuracy
    policy), the detector, and either (also with only the detections at :data:`EITHER_CUTS` or above); given
    the data set's ``boards``, also the detections scored as boxes (:func:`box_figures`, key ``boxes``)."""
    out = Path(out)
    data = held_out(out)
    groups = list(data.records)
    thresholds = out_of_group_thresholds(data.scores["model"], data.labels, "accuracy") if len(groups) >= 2 else []
    rows: dict[str, list[np.ndarray]] = {"tile model": [], "detector": [], "either": []}
    rows |= {f"either, detections >= {c}": [] for c in EITHER_CUTS}
    labels, defect, folds = [], [], {}
    for k, group in enumerate(groups):
        path = fold_dir(out, group) / "detector.npz"
        if not thresholds or not path.is_file():
            continue
        with np.load(path) as z:
            detector = z["detector"]
        model = data.scores["model"][k] > thresholds[k]
        rows["tile model"].append(model)
        rows["detector"].append(detector >= 0.5)
        rows["either"].append(model | (detector >= 0.5))
        for c in EITHER_CUTS:
            rows[f"either, detections >= {c}"].append(model | (detector >= c))
        labels.append(data.labels[k])
        defect.append(data.defect[k])
        folds[group] = json.loads((fold_dir(out, group) / "detector.json").read_text())
        folds[group]["accuracy"] = {name: float((v[-1] == (data.labels[k] == 1)).mean()) for name, v in rows.items()}
    result: dict[str, Any] = {"folds": folds, "done": len(folds), "of": len(data.request["groups"])}
    if folds:
        lab, dfc = np.concatenate(labels), np.concatenate(defect)
        result["pooled"] = {name: _row(np.concatenate(v), lab, dfc) for name, v in rows.items()}
        if boards is not None:
            result["boxes"] = box_figures(out, list(folds), boards)
    return result


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f}"


def render_detector(result: dict[str, Any]) -> str:
    """Markdown tables of a :func:`summarise_detector` result."""
    lines = [
        f"The learned detector beside the tile model: {result['done']} of {result['of']} folds with detections.",
        "",
    ]
    if not result["folds"]:
        return "\n".join(lines) + "\n"
    pooled = result["pooled"]
    types = sorted({t for row in pooled.values() for t in row["by_type"]})
    lines += [
        "| verdict | accuracy | balanced acc. | recall | false alarms | " + " | ".join(types) + " |",
        "| --- | ---: | ---: | ---: | ---: |" + " ---: |" * len(types),
    ]
    for name, row in pooled.items():
        lines.append(
            f"| {name} | {_pct(row['accuracy'])} | {_pct(row['balanced_accuracy'])} | {_pct(row['recall'])} | "
            f"{_pct(row['false_alarm_rate'])} | " + " | ".join(_pct(row["by_type"].get(t)) for t in types) + " |"
        )
    lines += [
        "",
        "tile model: its out-of-group threshold at the accuracy policy; detector: a detection with at least half of "
        "its box inside the patch; either: defective where one of them says so.",
        "",
        "| held-out group | boards | tile model acc. | detector acc. | either acc. | detector training s | detect s |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for g, f in result["folds"].items():
        a = f["accuracy"]
        lines.append(
            f"| {g} | {f['boards']} | {_pct(a['tile model'])} | {_pct(a['detector'])} | {_pct(a['either'])} | "
            f"{f['train_seconds']:.0f} | {f['detect_seconds']:.0f} |"
        )
    if "boxes" in result:
        lines += ["", *_render_boxes(result["boxes"])]
    return "\n".join(lines) + "\n"


def _render_boxes(boxes: dict[str, Any]) -> list[str]:
    """The box table's lines: one row per held-out group, then the pooled row."""
    types = list(boxes["pooled"]["recall_by_type"])
    lines = [
        "Boxes with types by DeepPCB's protocol (IoU > 0.33, type must match), each held-out design judged by the "
        "detector that never saw it; recall by type %:",
        "",
        "| held-out group | boards | defects | P % | R % | F % | AP % | " + " | ".join(types) + " |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |" + " ---: |" * len(types),
    ]
    rows = [*boxes["folds"].items(), ("**pooled**", boxes["pooled"])]
    for name, b in rows:
        lines.append(
            f"| {name} | {b['n_images']} | {b['n_gt']} | {_pct(b['precision'])} | {_pct(b['recall'])} | "
            f"{_pct(b['f_score'])} | {_pct(b['ap'])} | "
            + " | ".join(_pct(b["recall_by_type"].get(t)) for t in types)
            + " |"
        )
    return lines


def run_cv_detector(
    out: str | Path,
    data_root: str | Path | None = None,
    only: Sequence[str] | None = None,
    settings: DetectorFoldSettings | None = None,
    progress: Callable[[str, int], Callable[[int], None]] | None = None,
) -> dict[str, Any]:
    """Add the learned detector to the finished folds of the cross-validation in ``out`` (resumable).

    Args:
        out: a ``pcbsiam cv`` folder.
        data_root: the DeepPCB root (default: the cross-validation's own ``data.root``).
        only: these held-out groups only (default: every finished fold).
        settings: how the detectors are trained and applied.
        progress: ``progress(group, boards)`` returns a callback taking the boards detected.

    Returns:
        The :func:`summarise_detector` result (also written to ``out/detector.json`` and ``out/detector.md``).

    Raises:
        ConfigError: ``out`` holds no cross-validation, or ``only`` names a group without a finished fold.
    """
    out = Path(out)
    data = held_out(out)
    settings = settings or DetectorFoldSettings()
    boards = _boards(data.request, data_root)
    finished = list(data.records)
    missing = sorted(set(only or []) - set(finished))
    if missing:
        raise ConfigError(f"no finished fold for {missing} in {out}; finished: {finished}")
    result = None
    for group in [g for g in finished if not only or g in only]:
        log.info("detector for the fold holding %s out", group)
        detect_fold(out, group, boards, settings, progress)
        result = detector_report(out, boards=boards)  # after each fold, so an interrupted run leaves its report
    return result if result is not None else detector_report(out, boards=boards)


def _boards(request: dict[str, Any], data_root: str | Path | None) -> list[BoardPair]:
    """The cross-validation's boards: from ``data_root`` or the root and split its cv.json names."""
    data = request["config"]["data"]
    return read_boards(data_root or data["root"], data.get("split", "trainval.txt")).pairs


def detector_report(
    out: str | Path, data_root: str | Path | None = None, boards: Sequence[BoardPair] | None = None
) -> dict[str, Any]:
    """Write ``out/detector.json`` and ``out/detector.md`` from the finished folds; the :func:`summarise_detector`
    result, boxes included.

    Args:
        out: a ``pcbsiam cv`` folder.
        data_root: the DeepPCB root for the boxes' ground truth (default: the cross-validation's ``data.root``).
        boards: the boards already read (then ``data_root`` is not read).
    """
    if boards is None:
        boards = _boards(held_out(out).request, data_root)
    result = summarise_detector(out, boards)
    write_json(Path(out) / "detector.json", result)
    write_text(Path(out) / "detector.md", render_detector(result))
    return result
