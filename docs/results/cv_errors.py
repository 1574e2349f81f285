"""Where the cross-validation's errors are: the held-out patches the model gets wrong, by how much of
their defect box lies inside the patch (the DeepPCB-Cls rule: defective at >= 0.5 of the box's area).

    python docs/results/cv_errors.py docs/results/cv-stack-band-gate ../shared/datasets/DeepPCB

Reads each fold's scores.npz, fold.json (threshold at the accuracy policy) and split.json (held-out items in
scoring order), cuts the same patches again from the annotations (no image is decoded) and prints, per
bucket of the largest overlap fraction f, the defective patches and the misses, then the misses per fold and per
defect type, and the box sizes of the misses.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

import numpy as np

from pcbsiam.data.defects import defect_name
from pcbsiam.data.protocol import overlap_fractions, tile_grid
from pcbsiam.data.sources import read_boards

BUCKETS = [(0.5, 0.75), (0.75, 1.0), (1.0, 1.01)]


def main(records: str, root: str) -> None:
    boards = {p.name: p for p in read_boards(root, "trainval.txt").pairs}
    rows = []
    for fold in sorted(Path(records).glob("fold-*")):
        z = np.load(fold / "scores.npz")
        thr = json.loads((fold / "fold.json").read_text())["thresholds"]["model"]["accuracy"]
        split = json.loads((fold / "split.json").read_text()) if (fold / "split.json").is_file() else None
        names = split["val"] if split else sorted(n for n, p in boards.items() if p.group == fold.name[5:])
        fmax, area = [], []
        for name in names:
            pair = boards[name]
            for y, x, h, w in tile_grid(640, 640, 128, None).tolist():
                f = overlap_fractions(pair.boxes, y, x, h, w)
                m = float(f.max()) if len(f) else 0.0
                if 0 < m < 0.5:
                    continue
                fmax.append(m)
                if m >= 0.5:
                    b = pair.boxes[int(np.argmax(f))]
                    area.append(int((b[2] - b[0]) * (b[3] - b[1])))
                else:
                    area.append(0)
        fmax = np.asarray(fmax)
        if len(fmax) != len(z["labels"]):
            print(f"{fold.name}: {len(fmax)} patches cut, {len(z['labels'])} scored: skipped", file=sys.stderr)
            continue
        pred = z["model"] > thr
        print(f"{fold.name}: {(z['labels'] == 1).sum()} defective, {((z['labels'] == 1) & ~pred).sum()} missed")
        rows.append((fmax, np.asarray(area), z["labels"], pred, z["defect"]))
    fmax, area, labels, pred, defect = (np.concatenate(c) for c in zip(*rows, strict=True))
    pos = labels == 1
    missed, alarms = (pos & ~pred).sum(), (~pos & pred).sum()
    print(f"{len(labels)} patches, {pos.sum()} defective, {missed} missed, {alarms} false alarms")
    print("largest overlap f | defective | missed | miss rate %")
    for lo, hi in BUCKETS:
        sel = pos & (fmax >= lo) & (fmax < hi)
        print(
            f"[{lo:.2f}, {min(hi, 1.0):.2f}{']' if hi > 1 else ')'} | {sel.sum()} | {(sel & ~pred).sum()} | "
            f"{100 * (sel & ~pred).sum() / max(sel.sum(), 1):.2f}"
        )
    missed = pos & ~pred
    print("missed by type:", dict(Counter(defect_name(int(d)) for d in defect[missed])))
    print(
        "missed box area px (quartiles):",
        np.percentile(area[missed], [25, 50, 75]).tolist(),
        "all defective:",
        np.percentile(area[pos], [25, 50, 75]).tolist(),
    )


if __name__ == "__main__":
    main(*sys.argv[1:3])
