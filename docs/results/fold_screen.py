"""One fold of several cross-validations side by side: a lever screened against the recorded networks.

    python docs/results/fold_screen.py group20085 docs/results/cv-e4 docs/results/cv-e4-seed1 \
        docs/results/cv-focal docs/results/cv-fineband [--data ../shared/datasets/DeepPCB]

For each `pcbsiam cv` folder that finished the fold (the same held-out patches in the same order), one
Markdown row: accuracy, recall and false alarms at the fold's own accuracy-policy threshold, its mousebite
misses there, the AUROC, then the misses and mousebite misses where the network raises exactly 10, 20 and 40
false alarms on the held-out group (the rankings compared without the threshold's luck), and the training
seconds. No network runs.

With ``--data`` it also cuts the fold's patches again as `cpu-stack-band` sees them (registered, references
moved locally) and counts the tolerance-band pixels inside each tile at 2 px and 1 px: medians of the
defective patches the first folder's network catches and misses, and how many defect-free patches have any.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from pcbsiam.data.defects import DEFECT_CODES
from pcbsiam.evaluation.metrics import binary_metrics
from pcbsiam.experiment.cv import fold_dir

MATCHED_ALARMS = (10, 20, 40)
MOUSEBITE = DEFECT_CODES["mousebite"]


def read_fold(run: str, group: str) -> tuple[dict, np.ndarray, np.ndarray, np.ndarray, float]:
    """A finished fold: its fold.json record, (n,) held-out scores, labels and defect codes, and its own
    accuracy-policy threshold."""
    folder = fold_dir(Path(run), group)
    record = json.loads((folder / "fold.json").read_text())
    with np.load(folder / "scores.npz") as z:
        scores, labels, defect = z["model"], z["labels"], z["defect"]
    return record, scores, labels, defect, record["thresholds"]["model"]["accuracy"]


def fold_row(run: str, group: str) -> str:
    """The Markdown row of one cross-validation's fold (see the module docstring)."""
    record, scores, labels, defect, threshold = read_fold(run, group)
    m = binary_metrics(scores, labels, threshold)
    pos, bite = labels == 1, (labels == 1) & (defect == MOUSEBITE)
    cells = [
        f"{100 * m['accuracy']:.2f}",
        f"{100 * m['recall']:.2f}",
        f"{100 * m['false_alarm_rate']:.2f}",
        str(int((bite & (scores <= threshold)).sum())),
        f"{m['auroc']:.4f}",
    ]
    for k in MATCHED_ALARMS:
        cut = np.sort(scores[~pos])[-k - 1]  # exactly k defect-free patches score above it
        missed = scores <= cut
        cells.append(f"{int((pos & missed).sum())} / {int((bite & missed).sum())}")
    cells.append(f"{record['train_seconds']:,.0f}")
    return f"| {run} | " + " | ".join(cells) + " |"


def band_counts(run: str, group: str, data: str) -> None:
    """Print the band-pixel counts of the fold's patches at 2 px and 1 px (see the module docstring)."""
    import torch

    from pcbsiam.config import load_config
    from pcbsiam.data.crops import PatchSpec
    from pcbsiam.evaluation.evaluate import load_subset
    from pcbsiam.evaluation.scoring import pair_loader
    from pcbsiam.models.band import band_defects

    cfg = load_config("cpu-stack-band")
    spec = PatchSpec.from_config(cfg)
    items = _group_items(data, cfg.data.split, group)  # a fold holds out its group's boards, in this order
    held = load_subset(data, cfg.data.split, "val", items, spec, cfg.data.cache_dir)
    lo, hi = spec.context, spec.context + spec.patch
    counts: dict[int, list[np.ndarray]] = {2: [], 1: []}
    with torch.inference_mode():
        for tested, reference, _, _ in pair_loader(held.store, held.index, spec, 128):
            for radius, out in counts.items():
                band = band_defects(tested, reference, radius, cfg.model.band_level)[..., lo:hi, lo:hi]
                out.append(band.flatten(1).sum(1).numpy())
    _, scores, labels, _, threshold = read_fold(run, group)
    caught, pos = scores > threshold, labels == 1
    for radius, parts in counts.items():
        c = np.concatenate(parts)
        print(
            f"band {radius} px: median pixels in the tile, caught {np.median(c[pos & caught]):.0f}, "
            f"missed {np.median(c[pos & ~caught]):.0f} ({int((c[pos & ~caught] == 0).sum())} of "
            f"{int((pos & ~caught).sum())} missed have none); defect-free with any: {int((c[~pos] > 0).sum())} "
            f"of {int((~pos).sum())}"
        )


def _group_items(data: str, split: str, group: str) -> list[str]:
    """The names of the boards of ``group`` in the split."""
    from pcbsiam.data.sources import read_boards

    return sorted(p.name for p in read_boards(data, split).pairs if p.group == group)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("group")
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--data", default=None, help="DeepPCB root: also count band pixels (cuts the patches again)")
    args = ap.parse_args()
    print(
        "| cross-validation | accuracy | recall | false alarms | mousebite misses | AUROC | "
        + " | ".join(f"misses / mousebite misses at {k} FA" for k in MATCHED_ALARMS)
        + " | training s |"
    )
    print("| --- |" + " ---: |" * (6 + len(MATCHED_ALARMS)))
    for run in args.runs:
        print(fold_row(run, args.group))
    if args.data:
        band_counts(args.runs[0], args.group, args.data)


if __name__ == "__main__":
    main()
