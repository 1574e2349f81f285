"""The learned detector with candidates from filled gaps too (`ClassicalDetector(filled_gaps=True)`).

    python docs/results/filled_gaps_sweep.py MODEL RESULTS [--subset val | --holdout-groups G1,G2 | --group G]

MODEL: a detector file or training folder. RESULTS: the folder of `<id>.txt` result files the same detector wrote
at `--views 4 --fine-band 1` (`detect --batch ... --out D`: D/results; a cv-detector fold: fold-<group>/detections).
The boards: as in docs/results/rule_wins_sweep.py. A board whose proposals the filled gaps leave unchanged keeps
its result file; the others are detected again with the gaps' candidates (and once without them, to check that
the detector still writes the stored file). Prints P / R / F / AP % and recall per type, before and after, and the
boards and candidates the gaps added.
"""

from __future__ import annotations

import argparse
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np
from sweep_common import board_options, boards_of, report_line

from pcbsiam.data.deeppcb import read_detections, write_detections
from pcbsiam.data.images import load_gray
from pcbsiam.detection.learned import load_detector
from pcbsiam.evaluation.detection import evaluate_detections


def as_written(rows: np.ndarray, name: str) -> np.ndarray:
    """(N, 6) detections as a result file gives them back (boxes and confidences rounded as written)."""
    with tempfile.TemporaryDirectory() as tmp:
        return read_detections(write_detections(tmp, name, rows))


def main() -> None:
    """Detect again the boards the filled gaps change; print both rows."""
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("results", type=Path)
    board_options(ap)
    args = ap.parse_args()
    boards = boards_of(args)
    plain = load_detector(args.model, views=4, fine_band=1)
    gaps = load_detector(args.model, views=4, fine_band=1)
    gaps.nets = plain.nets
    gaps.proposer = replace(plain.proposer, filled_gaps=True)
    before, after, changed, added, mismatched = [], [], 0, 0, 0
    for p in boards:
        stored = read_detections(args.results / f"{p.name}.txt")
        tested, template = load_gray(p.tested), load_gray(p.template)
        extra = len(gaps.proposer.detect(tested, template)) - len(plain.proposer.detect(tested, template))
        rows = stored
        if extra:
            changed, added = changed + 1, added + extra
            again = as_written(plain.detect(tested, template).as_array(), p.name)
            mismatched += not (again.shape == stored.shape and np.allclose(again, stored, atol=1e-5))
            rows = as_written(gaps.detect(tested, template).as_array(), p.name)
        before.append((p.name, p.boxes, stored))
        after.append((p.name, p.boxes, rows))
    print(
        f"{args.model}: {len(boards)} boards, {changed} with {added} more candidates ({mismatched} re-detected "
        "boards differ from their stored file)"
    )
    for name, items in (("stored", before), ("with filled gaps", after)):
        print(report_line(name, evaluate_detections(items)))


if __name__ == "__main__":
    main()
