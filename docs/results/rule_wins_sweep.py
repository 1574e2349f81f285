"""The learned detector with and without the rules' one-way win of mousebite over the network's open.

    python docs/results/rule_wins_sweep.py MODEL [--subset val | --holdout-groups G1,G2 | --group G] [--views 4]

MODEL: a detector file or training folder (`pcbsiam train-detector`, or a `cv-detector` fold's
fold-<group>/detector). The boards: `--subset val` (the whole-image validation split), `--holdout-groups`
(the held-out groups, as `detect --holdout-groups`), or `--group G` (one group's boards, for a cv-detector fold).
Each board's candidates go through the verifier once (4 views, the finer band at 1 px, as recommended); the
same probabilities are then typed twice: today's default, and with `rule_wins=((1, 3),)` (a candidate the
network calls an open and the rules a mousebite is a mousebite). Prints P / R / F / AP % and recall per type
for both, by DeepPCB's protocol.
"""

from __future__ import annotations

import argparse

import numpy as np
from sweep_common import board_options, boards_of, report_line

from pcbsiam.data.images import load_gray
from pcbsiam.detection.learned import load_detector
from pcbsiam.evaluation.detection import evaluate_detections


def main() -> None:
    """Detect the boards once, type them both ways, print the two rows."""
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    board_options(ap)
    ap.add_argument("--views", type=int, default=4)
    args = ap.parse_args()
    boards = boards_of(args)
    plain = load_detector(args.model, views=args.views, fine_band=1)
    wins = load_detector(args.model, views=args.views, fine_band=1, rule_wins=((1, 3),))
    wins.nets = plain.nets
    seen: list = []
    verify = plain.verify

    def remember(*a, **k):  # noqa: ANN002, ANN003, ANN202
        seen.append(verify(*a, **k))
        return seen[-1]

    plain.verify = remember
    wins.verify = lambda *a, **k: seen[-1]
    items = {"today": [], "open -> mousebite by the rules": []}
    for p in boards:
        tested, template = load_gray(p.tested), load_gray(p.template)
        seen.clear()
        a = plain.detect(tested, template).as_array()
        b = wins.detect(tested, template).as_array() if seen else np.zeros((0, 6))
        items["today"].append((p.name, p.boxes, a))
        items["open -> mousebite by the rules"].append((p.name, p.boxes, b))
    print(f"{args.model}: {len(boards)} boards")
    for name, rows in items.items():
        print(report_line(name, evaluate_detections(rows)))


if __name__ == "__main__":
    main()
