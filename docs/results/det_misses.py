"""The errors of a `pcbsiam detect --batch` folder, one line each: every annotated defect not found (with the
detection that took it or overlaps it most) and every false detection above a confidence.

    python docs/results/det_misses.py runs/det19/lgo-s0-fx-v4 --holdout-groups group13000,group77000 [--above 0.5]

A miss is ``typed`` (matched by a detection of another type), ``low`` (a detection of the right type overlaps
it at IoU > 0.33 but was taken by another annotation), ``loose`` (the best overlapping detection has IoU <= 0.33)
or ``none`` (no detection touches it).
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

import numpy as np
from sweep_common import board_options, boards_of

from pcbsiam.data.deeppcb import read_detections
from pcbsiam.data.defects import defect_name
from pcbsiam.evaluation.detection import box_iou, match_image


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder")
    parser.add_argument("--above", type=float, default=0.0, help="list false detections at this confidence or more")
    board_options(parser)
    args = parser.parse_args()
    kinds: Counter[str] = Counter()
    false = 0
    for pair in boards_of(args):
        path = Path(args.folder) / f"{pair.name}.txt"
        det = read_detections(path) if path.is_file() else np.zeros((0, 6))
        m = match_image(pair.boxes, det)
        iou = box_iou(np.asarray(pair.boxes, float), det) if len(det) and len(pair.boxes) else None
        for i in np.flatnonzero(~m.found):
            g = pair.boxes[i]
            j = int(m.matched_det[i])
            if j >= 0:
                kind, k = "typed", j
            elif iou is not None and iou[i].max() > 0:
                k = int(iou[i].argmax())
                kind = "low" if iou[i, k] > 0.33 else "loose"
            else:
                kind, k = "none", -1
            kinds[kind] += 1
            size = f"{int(g[2] - g[0])}x{int(g[3] - g[1])}"
            near = "" if k < 0 else f" <- {defect_name(int(det[k, 5]))} {det[k, 4]:.3f} IoU {iou[i, k]:.2f}"
            print(f"miss {kind:5s} {pair.name} {defect_name(int(g[4]))} {size} at {int(g[0])},{int(g[1])}{near}")
        for j in np.flatnonzero((m.matched_gt < 0) & (det[:, 4] >= args.above) if len(det) else []):
            false += 1
            d = det[j]
            print(f"false       {pair.name} {defect_name(int(d[5]))} {d[4]:.3f} at {int(d[0])},{int(d[1])}")
    print(f"misses: {sum(kinds.values())} ({dict(kinds)}); false detections at >= {args.above}: {false}")


if __name__ == "__main__":
    main()
