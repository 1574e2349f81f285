"""F and AP when the 1 px band's detections must reach a cut, before they came second in the suppression.

    python docs/results/fine_cut_sweep.py [--hold=group13000,group77000] VIEWS DETECTOR [DETECTOR ...]

Per board: the detector as trained (the 2 px band's candidates), then the 1 px band's extra candidates
verified by the same verifier(s); the extra detections at or above each cut join the others under one plain
non-maximum suppression (the first rule of docs/RESULTS.md's sixth round; `detect --fine-band 1` now drops an
extra detection that meets another instead). Prints P / R / F / AP % and mousebite recall per cut.
"""

from __future__ import annotations

import sys
from dataclasses import replace

import numpy as np
import torch
from torchvision.ops import nms

from pcbsiam.cli.detect import select_boards
from pcbsiam.data.images import load_gray
from pcbsiam.detection.learned import load_detector
from pcbsiam.detection.records import Detections
from pcbsiam.evaluation.detection import evaluate_detections

CUTS = (None, 0.5, 0.8, 0.9, 0.95, 0.98, 0.99)


class _Fixed:
    """A proposer that returns given candidates (one part of the 1 px band's proposer's)."""

    def __init__(self, found: Detections) -> None:
        self.found = found

    def propose(self, tested: np.ndarray, template: np.ndarray) -> tuple[Detections, np.ndarray]:
        return self.found, np.zeros(len(self.found), bool)


def main(args: list[str]) -> None:
    """Print one line per cut (``None``: without the extra candidates)."""
    hold = args.pop(0).split("=", 1)[1] if args[0].startswith("--hold=") else None
    views, models = int(args[0]), args[1:]
    pairs, _, _ = select_boards("../shared/datasets/DeepPCB", "trainval.txt", "val", hold)
    det = load_detector(models if len(models) > 1 else models[0], views=views)
    fine = replace(det.proposer, fine_k=1)
    rows: dict[float | None, list] = {c: [] for c in CUTS}
    for p in pairs:
        tested, template = load_gray(p.tested), load_gray(p.template)
        found, new = fine.propose(tested, template)  # the band's candidates, and the 1 px band's extra ones
        verified = []
        for part in (~new, new):
            det.proposer = _Fixed(Detections(found.boxes[part], found.scores[part], found.types[part], found.shift))
            verified.append(det.detect(tested, template))
        base, extra = verified
        for c in CUTS:
            boxes, conf, kinds = base.boxes, base.scores, base.types
            if c is not None and len(extra):
                k = extra.scores >= c
                boxes, conf = np.concatenate([boxes, extra.boxes[k]]), np.concatenate([conf, extra.scores[k]])
                kinds = np.concatenate([kinds, extra.types[k]])
                if len(boxes):
                    o = nms(torch.from_numpy(boxes).float(), torch.from_numpy(conf).float(), det.nms_iou).numpy()
                    boxes, conf, kinds = boxes[o], conf[o], kinds[o]
            found = np.column_stack([boxes, conf, kinds]) if len(boxes) else np.zeros((0, 6))
            rows[c].append((p.name, p.boxes, found))
    for c in CUTS:
        r = evaluate_detections(rows[c])
        mb = r.to_dict()["per_type"]["mousebite"]["recall"]
        figures = " / ".join(f"{100 * v:.2f}" for v in (r.precision, r.recall, r.f_score, r.ap))
        print(f"cut {c}: P / R / F / AP {figures}, mousebite {100 * mb:.2f}")


if __name__ == "__main__":
    main(sys.argv[1:])
