"""Tile-gate sweep on the held-out groups of a finished leave-one-group-out cross-validation.

For every held-out patch of each fold: the tolerance-band pixels of the model's own crops (the band
channel of cpu-stack-band) inside the tile and a margin around it, beside the fold's ungated scores. Prints,
per (margin, largest skipped count), the share of patches skipped, the defective patches skipped, those of
them the network had found, and the false alarms removed.

    python docs/results/gate_sweep.py runs/cv-stack-band group00041 group13000 ...
(run before rescoring with the gate: it reads the folds' ungated scores.npz)
"""

import json
import sys
from pathlib import Path

import numpy as np
import torch

from pcbsiam.data.crops import PatchCropper
from pcbsiam.data.transforms import to_tensor
from pcbsiam.deploy.bundle import load_bundle
from pcbsiam.evaluation.evaluate import load_subset
from pcbsiam.models.band import band_defects

MARGINS, MAX_PIXELS = (0, 4, 8, 16), (0, 2, 5)


def band_counts(run: str) -> dict[int, np.ndarray]:
    bundle = load_bundle(run)
    spec, cfg = bundle.spec, bundle.model.cfg
    val_items = json.loads(Path(f"{run}/split.json").read_text())["val"]
    held = load_subset("../shared/datasets/DeepPCB", "trainval.txt", "val", val_items, spec)
    crops = PatchCropper(held.store, held.index, spec)
    out: dict[int, list] = {m: [] for m in MARGINS}
    c = spec.context
    for s in range(0, len(held.index), 256):
        pairs = [crops.pair(i) for i in range(s, min(s + 256, len(held.index)))]
        t, r = (to_tensor([p[k] for p in pairs], spec.input_size) for k in (0, 1))
        band = band_defects(t, r, cfg.band, cfg.band_level)[:, 0]
        for m in MARGINS:
            out[m].append(band[:, c - m : c + spec.patch + m, c - m : c + spec.patch + m].sum((1, 2)).numpy())
    return {m: np.concatenate(v) for m, v in out.items()}


def main(cv: str, groups: list[str]) -> None:
    torch.set_num_threads(1)
    totals: dict[tuple[int, int], np.ndarray] = {}
    for g in groups:
        run = f"{cv}/fold-{g}"
        counts = band_counts(run)
        z = np.load(f"{run}/scores.npz")
        thr = json.loads(Path(f"{run}/fold.json").read_text())["thresholds"]["model"]["accuracy"]
        m, y = z["model"], z["labels"]
        for margin in MARGINS:
            for most in MAX_PIXELS:
                skip = counts[margin] <= most
                row = [
                    skip.sum(),
                    len(y),
                    (skip & (y == 1)).sum(),
                    (skip & (y == 1) & (m > thr)).sum(),
                    (skip & (y == 0) & (m > thr)).sum(),
                ]
                totals[(margin, most)] = totals.get((margin, most), 0) + np.array(row)
    print(
        "| margin px | skipped if band pixels <= | tiles skipped | defective skipped | of them found by the network "
        "| false alarms removed |\n| ---: | ---: | ---: | ---: | ---: | ---: |"
    )
    for (margin, most), (sk, n, dsk, lost, fa) in totals.items():
        print(f"| {margin} | {most} | {100 * sk / n:.1f} % | {dsk} | {lost} | {fa} |")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
