"""DeepPCB-Cls patch verdicts from the learned detector's boxes, alone and beside a cross-validation's tile model.

    python docs/results/detector_patch_screen.py CV_DIR RESULTS_DIR GROUP [GROUP ...]

CV_DIR: a `pcbsiam cv` folder (each fold's held-out tile scores; thresholds chosen out of group, on the other
folds' held-out scores, at the accuracy policy). RESULTS_DIR: the `<id>.txt` result files of `pcbsiam detect
--batch` by a detector that never trained on GROUP's boards (e.g. one trained without two groups; `pcbsiam
cv-detector` trains one per fold). A patch's detector score is `cv-detector`'s: the largest confidence of the
detections with at least half of their box inside it; it says defective at any detection (kept at 0.5 or more).
Prints accuracy, recall, false alarms and recall per type over the groups' patches for the tile model, the
detector, and the two together (defective where either says so).
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import numpy as np

from pcbsiam.data.deeppcb import read_detections
from pcbsiam.data.defects import defect_name
from pcbsiam.data.sources import read_boards
from pcbsiam.experiment.cv import held_out, out_of_group_thresholds
from pcbsiam.experiment.cv_detector import detector_patch_scores


def detector_scores(boards: list, results: Path) -> np.ndarray:
    """(n,) the detector's score of every protocol patch of ``boards``, in the cross-validation's order."""
    files = [results / f"{p.name}.txt" for p in boards]
    found = [read_detections(f) if f.is_file() else np.zeros((0, 6)) for f in files]
    return detector_patch_scores(boards, found, [(640, 640)] * len(boards))[0]


def figures(name: str, pred: np.ndarray, labels: np.ndarray, defect: np.ndarray) -> None:
    """Print one row."""
    pos = labels == 1
    acc = (pred == pos).mean()
    by_type = Counter(defect_name(int(d)) for d in defect[pos])
    found = Counter(defect_name(int(d)) for d in defect[pos & pred])
    types = " ".join(f"{t} {100 * found[t] / n:.2f}" for t, n in sorted(by_type.items()))
    print(
        f"{name}: accuracy {100 * acc:.2f}, recall {100 * pred[pos].mean():.2f}, "
        f"false alarms {100 * pred[~pos].mean():.2f} ({(pred & ~pos).sum()} of {(~pos).sum()}), {types}"
    )


def main(cv_dir: str, results: str, groups: list[str]) -> None:
    """Print the rows over ``groups``' patches."""
    data = held_out(cv_dir)
    folds = list(data.records)
    thresholds = out_of_group_thresholds(data.scores["model"], data.labels, "accuracy")
    boards = read_boards("../shared/datasets/DeepPCB", "trainval.txt").pairs
    model, detector, labels, defect = [], [], [], []
    for group in groups:
        k = folds.index(group)
        fold_boards = sorted((p for p in boards if p.group == group), key=lambda p: p.name)
        scores = detector_scores(fold_boards, Path(results))
        if len(scores) != len(data.labels[k]):
            raise SystemExit(f"{group}: {len(scores)} patches cut, {len(data.labels[k])} scored")
        model.append(data.scores["model"][k] > thresholds[k])
        detector.append(scores >= 0.5)
        labels.append(data.labels[k])
        defect.append(data.defect[k])
    model, detector, labels, defect = (np.concatenate(c) for c in (model, detector, labels, defect))
    figures("tile model (out-of-group threshold)", model, labels, defect)
    figures("detector", detector, labels, defect)
    figures("either", model | detector, labels, defect)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3:])
