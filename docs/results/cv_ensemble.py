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
from pcbsiam.evaluation.metrics import binary_metrics
from pcbsiam.experiment.cv import HeldOut, fold_dir, held_out, out_of_group_thresholds


def calibration_scores(run: str, group: str) -> tuple[np.ndarray, np.ndarray]:
    """The (n,) scores and labels of the training patches a fold calibrated its own threshold on."""
    with np.load(fold_dir(Path(run), group) / "scores.npz") as z:
        return z["calib_model"], z["calib_labels"]


def common(runs: list[HeldOut]) -> list[str]:
    """Groups every run finished, checked to hold the same patches."""
    groups = [g for g in runs[0].records if all(g in r.records for r in runs)]
    for g in groups:
        k = [list(r.records).index(g) for r in runs]
        for r, i in zip(runs[1:], k[1:], strict=True):
            if not np.array_equal(r.labels[i], runs[0].labels[k[0]]):
                raise SystemExit(f"{g}: the runs did not score the same patches")
    return groups


def row(
    name: str, scores: list[np.ndarray], labels: list[np.ndarray], defect: list[np.ndarray], thr: list[float]
) -> str:
    """One line of pooled figures at per-fold thresholds ``thr``."""
    v = np.concatenate([(s > t).astype(np.float64) for s, t in zip(scores, thr, strict=True)])
    y, d = np.concatenate(labels), np.concatenate(defect)
    m = binary_metrics(v, y, 0.5)
    types = " ".join(f"{defect_name(t)} {100 * v[d == t].mean():.2f}" for t in range(1, 7))
    auroc = binary_metrics(np.concatenate(scores), y, 0.0)["auroc"]  # the pooled ranking's, not the verdicts'
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
    groups = common(runs)
    print(f"{len(groups)} groups every run finished: {', '.join(groups)}")
    pick = [[list(r.records).index(g) for g in groups] for r in runs]
    labels = [runs[0].labels[i] for i in pick[0]]
    defect = [runs[0].defect[i] for i in pick[0]]
    calib_labels = [calibration_scores(args.runs[0], g)[1] for g in groups]
    held = {f"{path}": [r.scores["model"][i] for i in p] for path, r, p in zip(args.runs, runs, pick, strict=True)}
    calib = {f"{path}": [calibration_scores(path, g)[0] for g in groups] for path in args.runs}
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
