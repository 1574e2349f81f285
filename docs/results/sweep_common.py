"""What the detection sweeps of docs/results share: the boards a command line names, one verification of each
board's candidates post-processed several ways, and a figures line."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from pcbsiam.cli.detect import select_boards
from pcbsiam.data.images import load_gray
from pcbsiam.data.records import BoardPair
from pcbsiam.data.sources import read_boards
from pcbsiam.detection.learned import load_detector
from pcbsiam.evaluation.detection import DetectionReport

#: (image id, annotations, detections) of one board, as `evaluate_detections` reads them.
Item = tuple[str, Any, Any]

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


def detect_ways(
    model: str | Sequence[str], boards: list[BoardPair], ways: dict[str, dict[str, Any]], **common: Any
) -> dict[str, list[Item]]:
    """Detect ``boards`` once per way, verifying each board's candidates only once.

    Args:
        model: the detector file(s).
        boards: the boards.
        ways: name -> `LearnedDetector` settings that change only what follows the verifier (types, cuts,
            suppression, confidences), not the candidates or the views.
        common: settings of every way (``views``, ``fine_band``).

    Returns:
        name -> one (image id, annotations, (N, 6) detections) item per board.
    """
    detectors = {name: load_detector(model, **common, **kw) for name, kw in ways.items()}
    first, *others = detectors.values()
    seen: list = []
    verify = first.verify

    def remember(*a, **k):  # noqa: ANN002, ANN003, ANN202
        seen.append(verify(*a, **k))
        return seen[-1]

    first.verify = remember
    for d in others:
        d.nets = first.nets
        d.verify = lambda *a, **k: seen[-1]  # only called after the first way verified the same candidates
    items: dict[str, list[Item]] = {name: [] for name in ways}
    for p in boards:
        tested, template = load_gray(p.tested), load_gray(p.template)
        for name, d in detectors.items():
            items[name].append((p.name, p.boxes, d.detect(tested, template).as_array()))
    return items
