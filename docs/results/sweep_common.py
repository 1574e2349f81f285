"""What the detection sweeps of docs/results share: the boards a command line names, and a figures line."""

from __future__ import annotations

import argparse

from pcbsiam.cli.detect import select_boards
from pcbsiam.data.records import BoardPair
from pcbsiam.data.sources import read_boards
from pcbsiam.evaluation.detection import DetectionReport

DATA = "../shared/datasets/DeepPCB"


def board_options(parser: argparse.ArgumentParser) -> None:
    """``--subset``, ``--holdout-groups`` (as `pcbsiam detect`) and ``--group`` (one group's boards)."""
    parser.add_argument("--subset")
    parser.add_argument("--holdout-groups")
    parser.add_argument("--group")


def boards_of(args: argparse.Namespace) -> list[BoardPair]:
    """The boards :func:`board_options` name."""
    if args.group:
        return [p for p in read_boards(DATA, "trainval.txt").pairs if p.group == args.group]
    return select_boards(DATA, "trainval.txt", args.subset, args.holdout_groups)[0]


def report_line(name: str, r: DetectionReport) -> str:
    """``name: P/R/F/AP ...; recall per type`` in %."""
    types = " ".join(f"{t} {100 * v['recall']:.2f}" for t, v in r.per_type().items() if v["recall"] is not None)
    return (
        f"{name}: P/R/F/AP {100 * r.precision:.2f} / {100 * r.recall:.2f} / {100 * r.f_score:.2f} / "
        f"{100 * r.ap:.2f}; {types}"
    )
