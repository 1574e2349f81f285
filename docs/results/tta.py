"""Test-time dihedral views on finished cross-validation folds, without training again.

    python docs/results/tta.py runs/cv-stack-band 4 group20085 [group...]

Each fold's network scores its 4,000 calibration patches and its held-out group with the mean logit over
``views`` dihedral views of each pair (``model.views``: 1 as trained; 2 + horizontal flip; 4 + vertical flip
and rotation by 180 degrees; 8 all), tested and reference transformed together, the tile gate as in the
fold; the threshold is chosen on the calibration patches at the accuracy policy. Prints held-out accuracy,
recall and false alarms beside the fold's recorded figures, and keeps the scores in
``<fold>/tta-<views>.npz``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch

from pcbsiam.config import from_dict, inference_settings
from pcbsiam.deploy.bundle import load_bundle
from pcbsiam.evaluation.calibration import choose_threshold
from pcbsiam.evaluation.evaluate import load_subset, model_scorer
from pcbsiam.evaluation.metrics import binary_metrics


def main(cv_dir: str, views: str, *groups: str) -> None:
    cv, n = Path(cv_dir), int(views)
    torch.set_num_threads(2)
    for group in groups:
        run = cv / f"fold-{group}"
        record = json.loads((run / "fold.json").read_text())
        cfg = from_dict(__import__("yaml").safe_load((run / "config.yaml").read_text()))
        # the network's own test-time views (model.views): the mean logit over the first n dihedral views
        inference = record.get("inference", inference_settings(cfg)) | {"model.views": n}
        bundle = load_bundle(run, "cpu", inference, recalibrating=True)
        val_items = json.loads((run / "split.json").read_text())["val"]
        root, split = cfg.data.root, cfg.data.split
        train = load_subset(root, split, "train", val_items, bundle.spec, cfg.data.cache_dir, 4000, seed=1)
        held = load_subset(root, split, "val", val_items, bundle.spec, cfg.data.cache_dir)
        score = model_scorer(bundle, "cpu")
        calib, scores = score(train.store, train.index), score(held.store, held.index)
        thr = choose_threshold(calib, train.index.labels, "accuracy").threshold
        m = binary_metrics(scores, held.index.labels, thr)
        old = np.load(run / "scores.npz")
        m0 = binary_metrics(old["model"], old["labels"], record["thresholds"]["model"]["accuracy"])
        np.savez(run / f"tta-{n}.npz", model=scores, calib_model=calib, labels=held.index.labels, threshold=thr)
        for name, x in (("recorded", m0), (f"{n} views", m)):
            print(
                f"{group} {name}: accuracy {100 * x['accuracy']:.2f} recall {100 * x['recall']:.2f} "
                f"false alarms {100 * x['false_alarm_rate']:.2f} AUROC {x['auroc']:.4f}",
                flush=True,
            )


if __name__ == "__main__":
    main(*sys.argv[1:])
