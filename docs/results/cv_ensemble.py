"""Seeds of one cross-validation side by side, and their ensemble (the mean of their logits), on stored scores.

    python docs/results/cv_ensemble.py runs/cv-e4 runs/cv-e4-seed1 [--policy accuracy --policy balanced_accuracy]

Each folder is a `pcbsiam cv` run of the same config with another training seed; only the groups every folder
finished are read (their held-out patches come in the same order: same split, same protocol). For each seed
and for the ensemble it prints, at each policy, the figures of all folds pooled at each fold's own threshold
(chosen on its training patches: the calibration patches the folds stored) and at the out-of-group threshold
(chosen on the other folds' held-out scores), with recall per defect type. No network runs.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from pcbsiam.data.defects import defect_name
from pcbsiam.evaluation.calibration import choose_threshold
from pcbsiam.evaluation.metrics import binary_metrics, recall_by_type, roc_auc
from pcbsiam.experiment.cv import HeldOut, fold_dir, held_out, out_of_group_thresholds


def calibration_scores(run: str, group: str) -> tuple[np.ndarray, np.ndarray]:
    """The (n,) scores and labels of the training patches a fold calibrated its own threshold on."""
    with np.load(fold_dir(Path(run), group) / "scores.npz") as z:
        return z["calib_model"], z["calib_labels"]


def common(runs: list[HeldOut]) -> tuple[list[str], list[list[int]]]:
    """Groups every run finished, checked to hold the same patches, and per run the folds' indices of them."""
    groups = [g for g in runs[0].records if all(g in r.records for r in runs)]
    pick = [[list(r.records).index(g) for g in groups] for r in runs]
    for n, g in enumerate(groups):
        if not all(np.array_equal(r.labels[p[n]], runs[0].labels[pick[0][n]]) for r, p in zip(runs, pick, strict=True)):
            raise SystemExit(f"{g}: the runs did not score the same patches")
    return groups, pick


def row(
    name: str, scores: list[np.ndarray], labels: list[np.ndarray], defect: list[np.ndarray], thr: list[float]
) -> str:
    """One line of pooled figures at per-fold thresholds ``thr``."""
    v = np.concatenate([(s > t).astype(np.float64) for s, t in zip(scores, thr, strict=True)])
    y, d = np.concatenate(labels), np.concatenate(defect)
    m = binary_metrics(v, y, 0.5)
    by_type = recall_by_type(v, y, 0.5, np.array([defect_name(int(t)) for t in d], dtype=object))
    types = " ".join(f"{defect_name(t)} {100 * by_type[defect_name(t)]['recall']:.2f}" for t in range(1, 7))
    auroc = roc_auc(np.concatenate(scores), y)  # the pooled ranking's, not the verdicts'
    return (
        f"{name:44s} acc {100 * m['accuracy']:.2f} recall {100 * m['recall']:.2f} "
        f"false alarms {100 * m['false_alarm_rate']:.2f} pooled AUROC {auroc:.4f} | {types}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", help="pcbsiam cv folders of one config, other seeds")
    ap.add_argument("--policy", action="append", default=None, help="calibration policies (default accuracy)")
    args = ap.parse_args()
    runs = [held_out(r) for r in args.runs]
    groups, pick = common(runs)
    print(f"{len(groups)} groups every run finished: {', '.join(groups)}")
    labels = [runs[0].labels[i] for i in pick[0]]
    defect = [runs[0].defect[i] for i in pick[0]]
    stored = {path: [calibration_scores(path, g) for g in groups] for path in args.runs}
    calib_labels = [y for _, y in stored[args.runs[0]]]  # the same patches in every run (same split, seed 1 draw)
    calib = {path: [c for c, _ in folds] for path, folds in stored.items()}
    held = {path: [r.scores["model"][i] for i in p] for path, r, p in zip(args.runs, runs, pick, strict=True)}
    held["ensemble (mean logit)"] = [np.mean(f, axis=0) for f in zip(*held.values(), strict=True)]
    calib["ensemble (mean logit)"] = [np.mean(f, axis=0) for f in zip(*calib.values(), strict=True)]
    for policy in args.policy or ["accuracy"]:
        print(f"\npolicy {policy}")
        for name, scores in held.items():
            own = [choose_threshold(c, y, policy).threshold for c, y in zip(calib[name], calib_labels, strict=True)]
            print(row(f"{name}, own threshold", scores, labels, defect, own))
            if len(groups) > 1:
                oog = out_of_group_thresholds(scores, labels, policy)
                print(row(f"{name}, out-of-group threshold", scores, labels, defect, oog))


if __name__ == "__main__":
    main()
