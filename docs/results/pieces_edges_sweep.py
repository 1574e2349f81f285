"""The learned detector with and without its two last rules: pieces dropped, the edge's boxes ranked lower.

    python docs/results/pieces_edges_sweep.py MODEL [--subset val | --holdout-groups G1,G2 | --group G]
    python docs/results/pieces_edges_sweep.py --cv DIR

MODEL: a detector file or training folder; the boards as in docs/results/rule_wins_sweep.py. `--cv DIR`: a
`pcbsiam cv-detector` folder, each fold's verifier on the boards of the group it never saw, and the folds pooled.
Each board's candidates go through the verifier once (4 views, the finer band at 1 px, as recommended) and are
post-processed three ways: as before these rules (``piece_share=None, edge_weight=1``), pieces dropped only, and
today's defaults (pieces dropped, the confidence of a box touching the image's edge halved). Prints P / R / F /
AP % and recall per type of each way, by DeepPCB's protocol.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from sweep_common import DATA, board_options, boards_of, detect_ways, report_line

from pcbsiam.data.sources import read_boards
from pcbsiam.evaluation.detection import evaluate_detections

WAYS = {
    "before": {"piece_share": None, "edge_weight": 1.0},
    "pieces dropped": {"edge_weight": 1.0},
    "pieces dropped, edges at half (default)": {},
}


def main() -> None:
    """Detect the boards once, post-process them three ways, print the rows (per fold and pooled with --cv)."""
    ap = argparse.ArgumentParser()
    ap.add_argument("model", nargs="?")
    ap.add_argument("--cv", type=Path)
    board_options(ap)
    args = ap.parse_args()
    if (args.model is None) == (args.cv is None):
        ap.error("give MODEL or --cv DIR")
    if args.model:
        runs = [(args.model, boards_of(args))]
    else:
        pairs = read_boards(DATA, "trainval.txt").pairs
        folds = sorted(args.cv.glob("fold-*/detector"))
        runs = [(str(f), [p for p in pairs if p.group == f.parent.name.removeprefix("fold-")]) for f in folds]
    pooled: dict[str, list] = {name: [] for name in WAYS}
    for model, boards in runs:
        items = detect_ways(model, boards, WAYS, views=4, fine_band=1)
        print(f"{model}: {len(boards)} boards")
        for name, rows in items.items():
            print(report_line(name, evaluate_detections(rows)))
            pooled[name] += rows
    if len(runs) > 1:
        print(f"pooled over {len(runs)} folds")
        for name, rows in pooled.items():
            print(report_line(name, evaluate_detections(rows)))


if __name__ == "__main__":
    main()
