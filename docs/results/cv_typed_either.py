"""The tile model or the learned detector, with the detector trusted only for some defect types.

    python docs/results/cv_typed_either.py CV_DIR

CV_DIR: a `pcbsiam cv` folder whose folds `pcbsiam cv-detector` has finished (fold-<group>/detections/). The tile
model says defective above its out-of-group threshold (accuracy policy), as in detector.md. "tile or T >= c": also
defective where a detection typed T (a set of types), with confidence c or more, has at least half of its box in
the patch (cv-detector's rule). Prints pooled accuracy, recall, false alarms and recall per type per verdict.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from pcbsiam.data.deeppcb import read_detections
from pcbsiam.data.defects import DEFECT_CODES, defect_name
from pcbsiam.data.sources import read_boards
from pcbsiam.experiment.cv import figures_at, fold_dir, held_out, out_of_group_thresholds
from pcbsiam.experiment.cv_detector import detector_patch_scores

TYPE_SETS = {"any": None, "mousebite": {"mousebite"}, "mousebite+open": {"mousebite", "open"}}
CUTS = (0.5, 0.9, 0.99)


def typed_scores(boards: list, results: Path, types: set[str] | None) -> tuple[np.ndarray, np.ndarray]:
    """Patch scores from the detections typed in ``types`` (all when None) and the patch labels."""
    found = []
    for p in boards:
        det = read_detections(results / f"{p.name}.txt")
        if types is not None:
            det = det[np.isin(det[:, 5], [DEFECT_CODES[t] for t in types])]
        found.append(det)
    return detector_patch_scores(boards, found, [(640, 640)] * len(boards))


def row(name: str, pred: np.ndarray, labels: np.ndarray, defect: np.ndarray, types: list[str]) -> None:
    """Print one verdict's pooled figures (the cross-validation's own, :func:`figures_at` of 0/1 verdicts)."""
    fig = figures_at(pred.astype(np.float64), labels, defect, 0.5)
    by_type = " | ".join(f"{100 * fig['by_type'][t]:.2f}" for t in types)
    print(
        f"| {name} | {100 * fig['accuracy']:.2f} | {100 * fig['recall']:.2f} | "
        f"{100 * fig['false_alarm_rate']:.2f} | {by_type} |"
    )


def main(cv_dir: Path) -> None:
    """Print the table over the folds with detections."""
    data = held_out(cv_dir)
    groups = list(data.records)
    thresholds = out_of_group_thresholds(data.scores["model"], data.labels, "accuracy")
    boards = read_boards(data.request["config"]["data"]["root"], "trainval.txt").pairs
    preds: dict[str, list[np.ndarray]] = {"tile model": []}
    labels, defect, done = [], [], []
    for k, group in enumerate(groups):
        results = fold_dir(cv_dir, group) / "detections"
        if not (fold_dir(cv_dir, group) / "detector.npz").is_file():
            continue
        done.append(group)
        held = [p for p in boards if p.group == group]
        tile = data.scores["model"][k] > thresholds[k]
        preds["tile model"].append(tile)
        for set_name, types in TYPE_SETS.items():
            scores, lab = typed_scores(held, results, types)
            if not np.array_equal(lab, data.labels[k]):
                raise SystemExit(f"{group}: patches differ from the fold's scores")
            for c in CUTS:
                preds.setdefault(f"tile or {set_name} >= {c}", []).append(tile | (scores >= c))
        labels.append(data.labels[k])
        defect.append(data.defect[k])
    lab, dfc = np.concatenate(labels), np.concatenate(defect)
    names = sorted({defect_name(int(d)) for d in dfc[lab == 1]})
    print(f"folds: {', '.join(done)}; {len(lab)} patches, {int(lab.sum())} defective\n")
    print("| verdict | accuracy | recall | false alarms | " + " | ".join(names) + " |")
    print("| --- | ---: | ---: | ---: |" + " ---: |" * len(names))
    for name, v in preds.items():
        row(name, np.concatenate(v), lab, dfc, names)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
