"""A cv-detector fold's verifier trained on candidates from filled gaps too, and its boxes on the held-out group.

    python docs/results/filled_gaps_fold.py CV_DIR GROUP OUT

Trains the verifier as `pcbsiam cv-detector` does for the fold holding GROUP out (6 epochs, seed 0, the fold's
training boards), with `filled_gaps` added to the candidates (OUT/detector/), detects GROUP's boards at 4 views
with the 1 px band (OUT/detections/) and prints P / R / F / AP % and recall per type beside the fold's own
detections (CV_DIR/fold-GROUP/detections).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from sweep_common import report_line

from pcbsiam.data.deeppcb import write_detections
from pcbsiam.data.images import load_gray
from pcbsiam.data.sources import read_boards
from pcbsiam.detection.learned import WindowSpec, load_detector
from pcbsiam.evaluation.detection import evaluate_folder
from pcbsiam.experiment.cv import fold_dir
from pcbsiam.models.detector import VerifierConfig
from pcbsiam.train.detector import DetectorTrainConfig, train_detector


def main(cv_dir: Path, group: str, out: Path) -> None:
    """Train, detect, print."""
    boards = read_boards("../shared/datasets/DeepPCB", "trainval.txt").pairs
    train = [p for p in boards if p.group != group]
    held = [p for p in boards if p.group == group]
    spec = WindowSpec()
    spec = WindowSpec(spec.grow, spec.min_side, tuple(sorted({**dict(spec.candidates), "filled_gaps": True}.items())))
    if not (out / "detector" / "detector.pt").is_file():
        t0 = time.perf_counter()
        record = {"holdout_groups": [group], "items": [p.name for p in train]}
        train_detector(
            train, out / "detector", VerifierConfig(rule_types=True), spec, DetectorTrainConfig(), "cpu", None, record
        )
        print(f"trained in {time.perf_counter() - t0:.0f} s")
    detector = load_detector(out / "detector", views=4, fine_band=1)
    assert detector.proposer.filled_gaps
    for p in held:
        rows = detector.detect(load_gray(p.tested), load_gray(p.template)).as_array()
        write_detections(out / "detections", p.name, rows)
    for name, folder in (
        ("fold's verifier", fold_dir(cv_dir, group) / "detections"),
        ("trained with filled gaps", out / "detections"),
    ):
        print(report_line(name, evaluate_folder(folder, held)))


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3]))
