"""Thresholds of a finished cross-validation chosen another way than on each fold's training patches.

For each fold, the threshold is chosen on the pooled held-out scores of the *other* folds (leave-one-fold-out:
scores of boards outside the fold model's training groups, from models trained the same way), then applied to
the fold's own held-out scores; the verdicts of all folds are pooled. Also printed: the pooled figures of one
threshold for all folds swept over a range (an oracle: chosen while looking at the scores it is judged on, so
only an upper bound of what any calibration of these networks can reach).

Run from the repository root:
    python docs/results/cv_thresholds.py docs/results/cv-stack-band-gate
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from pcbsiam.evaluation.calibration import choose_threshold


def _pooled(verdicts: list[np.ndarray], labels: list[np.ndarray]) -> dict[str, float]:
    v, y = np.concatenate(verdicts), np.concatenate(labels)
    return {
        "accuracy": round(float((v == y).mean()) * 100, 2),
        "recall": round(float(v[y].mean()) * 100, 2),
        "false_alarms": round(float(v[~y].mean()) * 100, 2),
    }


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("cv", type=Path, help="a cross-validation folder (cv.json, fold-*/scores.npz, fold-*/fold.json)")
    p.add_argument("--policies", default="accuracy,recall:0.995")
    a = p.parse_args()
    folds = sorted(d for d in a.cv.glob("fold-*") if (d / "scores.npz").is_file())
    scores = {d.name: np.load(d / "scores.npz")["model"] for d in folds}
    labels = {d.name: np.load(d / "scores.npz")["labels"].astype(bool) for d in folds}
    out: dict = {"folds": len(folds)}
    for policy in a.policies.split(","):
        own, other = [], []
        for d in folds:
            rest = [f.name for f in folds if f != d]
            cal = choose_threshold(
                np.concatenate([scores[r] for r in rest]), np.concatenate([labels[r] for r in rest]), policy
            )
            trained = json.loads((d / "fold.json").read_text())["thresholds"]["model"][policy]
            other.append(scores[d.name] > cal.threshold)
            own.append(scores[d.name] > trained)
        ys = [labels[d.name] for d in folds]
        out[policy] = {
            "training patches (as recorded)": _pooled(own, ys),
            "other folds' held-out scores": _pooled(other, ys),
        }
    s, y = np.concatenate(list(scores.values())), np.concatenate(list(labels.values()))
    out["one threshold for all folds (oracle)"] = {
        f"{t:g}": _pooled([s > t], [y]) for t in (-19.9, -8, -6, -5, -4, -3.5, -3, -2.5, -2, -1)
    }
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
