"""Screen changes to what follows the verifier, on stored verifier outputs (no network at screening time).

    python docs/results/postprocess_screen.py dump MODEL OUT.npz [--subset val | --holdout-groups G1,G2 | --group G]
        [--fine-extra]
    python docs/results/postprocess_screen.py screen OUT.npz [OUT.npz ...] [--pool]

``dump``: every candidate of every board with the verifier's class probabilities and box moves at `--views 4
--fine-band 1` (`--fine-extra`: the finer band's extra copper proposed too, ``ClassicalDetector(fine_extra=True)``).
``screen``: the detections each variant gives, scored by DeepPCB's protocol, per file (and pooled with `--pool`).
``before`` re-does `LearnedDetector.detect` as it was before pieces and edges (it gives the figures of
`detect --views 4 --fine-band 1` of that code, box for box); the others change one step of it.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from typing import Any

import numpy as np
import torch
from sweep_common import board_options, boards_of, report_line
from torchvision.ops import batched_nms, nms

from pcbsiam.data.images import load_gray
from pcbsiam.detection.learned import (
    RULE_FAMILIES,
    at_edge,
    boxes_from_windows,
    boxes_in_windows,
    drop_pieces,
    load_detector,
    split_by_rules,
)
from pcbsiam.evaluation.detection import box_iou, evaluate_detections

VARIANTS: dict[str, dict[str, Any]] = {
    "before": {},
    "suppression per type": {"nms_per_type": True},
    "confidence 1 - p(no defect)": {"defectness": "rank"},
    "kept when 1 - p(no defect) >= 0.5": {"defectness": "keep"},
    "min confidence 0.4": {"min_conf": 0.4},
    "pieces dropped (0.5)": {"pieces": 0.5},
    "pieces dropped (0.3)": {"pieces": 0.3},
    "pieces dropped, edges dropped below 0.9": {"pieces": 0.5, "edge_cut": 0.9},
    "pieces dropped, edges at half": {"pieces": 0.5, "edge_weight": 0.5},
}


def dump(args: argparse.Namespace) -> None:
    """Write every candidate's verdict."""
    det = load_detector(args.model, views=4, fine_band=1, piece_share=None, edge_weight=1.0)
    if args.fine_extra:
        det.proposer = replace(det.proposer, fine_extra=True)
    rows: dict[str, list] = {k: [] for k in ("board", "prop", "rtype", "fine", "win", "probs", "deltas")}
    names, shapes, truth = [], [], []
    for i, p in enumerate(boards_of(args)):
        tested, template = load_gray(p.tested), load_gray(p.template)
        c = det.candidates(tested, template)
        names.append(p.name)
        shapes.append(tested.shape)
        g = np.asarray(p.boxes, dtype=np.float64).reshape(-1, 5)
        truth.append(np.column_stack([np.full(len(g), i), g]))
        if not len(c.proposals):
            continue
        probs, deltas = det.verify(c.tested, c.reference, c.proposals.types)
        for key, value in zip(
            rows,
            (np.full(len(probs), i), c.proposals.boxes, c.proposals.types, c.fine, c.windows, probs, deltas),
            strict=True,
        ):
            rows[key].append(value)
    np.savez_compressed(
        args.out,
        names=np.array(names),
        shapes=np.array(shapes),
        gt=np.concatenate(truth),
        **{k: np.concatenate(v) for k, v in rows.items()},
    )


def detect_board(
    z: dict[str, np.ndarray],
    i: int,
    min_conf: float = 0.5,
    nms_per_type: bool = False,
    defectness: str | None = None,
    pieces: float | None = None,
    edge_cut: float | None = None,
    edge_weight: float = 1.0,
) -> np.ndarray:
    """(N, 6) detections of board ``i`` of a dump, post-processed as the settings say."""
    m = z["board"] == i
    if not m.any():
        return np.zeros((0, 6))
    probs, rules, fine, win = z["probs"][m], z["rtype"][m], z["fine"][m], z["win"][m]
    kinds = probs[:, 1:].argmax(1) + 1
    conf = probs[np.arange(len(kinds)), kinds]
    for family in RULE_FAMILIES:
        kinds, conf = split_by_rules(probs, kinds, conf, rules, family)
    gate = 1 - probs[:, 0] if defectness == "keep" else conf
    if defectness == "rank":
        conf = gate = 1 - probs[:, 0]
    boxes = boxes_from_windows(boxes_in_windows(z["prop"][m], win) + z["deltas"][m], win)
    h, w = z["shapes"][i]
    boxes = np.clip(boxes, 0, [w, h, w, h])
    cut = np.where(fine, max(min_conf, 0.9), min_conf)
    keep = (gate >= cut) & (boxes[:, 2] > boxes[:, 0] + 1) & (boxes[:, 3] > boxes[:, 1] + 1)
    boxes, conf, kinds, fine = boxes[keep], conf[keep], kinds[keep], fine[keep]
    if not len(boxes):
        return np.zeros((0, 6))
    b, c = torch.from_numpy(boxes).float(), torch.from_numpy(conf).float()
    if nms_per_type:
        first = np.flatnonzero(~fine)[batched_nms(b[~fine], c[~fine], torch.from_numpy(kinds[~fine]), 0.3).numpy()]
    else:
        first = np.flatnonzero(~fine)[nms(b[~fine], c[~fine], 0.3).numpy()]
    rest = np.flatnonzero(fine)
    if len(rest) and len(first):
        rest = rest[(box_iou(boxes[rest], boxes[first]) <= 0).all(1)]
    if len(rest):
        rest = rest[nms(b[rest], c[rest], 0.3).numpy()]
    order = np.concatenate([first, rest])
    order = order[np.argsort(-conf[order], kind="stable")]
    if pieces is not None:
        order = drop_pieces(boxes, kinds, order, pieces)
    boxes, conf, kinds = boxes[order], conf[order], kinds[order]
    edge = at_edge(boxes, (h, w))
    if edge_cut is not None:
        stay = ~edge | (conf >= edge_cut)
        boxes, conf, kinds, edge = boxes[stay], conf[stay], kinds[stay], edge[stay]
    conf = np.where(edge, edge_weight * conf, conf)
    order = np.argsort(-conf, kind="stable")
    return np.column_stack([boxes[order], conf[order], kinds[order]])


def screen(args: argparse.Namespace) -> None:
    """Print each variant's figures per dump (and pooled)."""
    dumps = {path: dict(np.load(path)) for path in args.dumps}
    for name, settings in VARIANTS.items():
        pooled = []
        for path, z in dumps.items():
            items = [
                (str(n), z["gt"][z["gt"][:, 0] == i][:, 1:], detect_board(z, i, **settings))
                for i, n in enumerate(z["names"])
            ]
            pooled += items
            if not args.pool:
                print(report_line(f"{name} [{path}]", evaluate_detections(items)))
        if args.pool:
            print(report_line(f"{name} [{len(dumps)} files pooled]", evaluate_detections(pooled)))


def main() -> None:
    """``dump`` or ``screen``."""
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="command", required=True)
    d = sub.add_parser("dump")
    d.add_argument("model")
    d.add_argument("out")
    d.add_argument("--fine-extra", action="store_true")
    board_options(d)
    s = sub.add_parser("screen")
    s.add_argument("dumps", nargs="+")
    s.add_argument("--pool", action="store_true")
    args = ap.parse_args()
    dump(args) if args.command == "dump" else screen(args)


if __name__ == "__main__":
    main()
