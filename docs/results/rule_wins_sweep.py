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

from sweep_common import board_options, boards_of, detect_ways, report_line

from pcbsiam.evaluation.detection import evaluate_detections


def main() -> None:
    """Detect the boards once, type them both ways, print the two rows."""
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    board_options(ap)
    ap.add_argument("--views", type=int, default=4)
    args = ap.parse_args()
    boards = boards_of(args)
    ways = {"today": {}, "open -> mousebite by the rules": {"rule_wins": ((1, 3),)}}
    items = detect_ways(args.model, boards, ways, views=args.views, fine_band=1)
    print(f"{args.model}: {len(boards)} boards")
    for name, rows in items.items():
        print(report_line(name, evaluate_detections(rows)))


if __name__ == "__main__":
    main()
