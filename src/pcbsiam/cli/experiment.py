"""Sub-command ``experiment``: the paper's ablation tables from a grid of repeated trainings."""

from __future__ import annotations

import argparse
import json
import sys

from pcbsiam.cli.common import config_options
from pcbsiam.errors import ConfigError


def cmd_experiment(args: argparse.Namespace) -> int:
    """Train the unfinished runs of a grid (or only re-render its report), print the tables' path."""
    from pcbsiam.experiment import run_experiment, write_report

    if args.report_only:
        report = write_report(args.out)
    elif not args.grid:
        raise ConfigError("--grid FILE is required (a grid YAML or a shipped grid: paper, cpu) unless --report-only")
    else:
        report = run_experiment(
            args.grid,
            args.out,
            repeats=args.repeats,
            overrides=args.set,
            data_root=args.data,
            only=args.only,
            max_runs=args.max_runs,
        )
    status = {
        "runs_finished": report.finished,
        "runs_total": report.total,
        "trained_now": report.trained,
        "failed_now": len(report.failed),
        "results": str(report.results),
        "figure": str(report.figure) if report.figure else None,
    }
    print(json.dumps(status), file=sys.stderr)
    print(report.tables)
    return 1 if report.failed else 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``experiment`` to the ``pcbsiam`` parser."""
    e = sub.add_parser(
        "experiment",
        help="repeated ablation trainings of a grid, summarised as the paper's tables and Fig. 4",
        description="Train every cell of a grid with N seeds into DIR/runs/ (finished runs are skipped, "
        "interrupted ones resumed, failures recorded in DIR/failures.jsonl), then write DIR/results.json, "
        "DIR/tables.md and DIR/learning_curves.png. Exit status 1 when a run failed.",
        parents=[config_options("override for every cell, e.g. train.device=cuda", data_root=True)],
    )
    e.add_argument("--grid", default=None, help="grid YAML file or shipped grid name (paper, cpu)")
    e.add_argument("--repeats", type=int, default=None, help="seeds per cell (default: the grid's repeats)")
    e.add_argument("--out", required=True, help="experiment folder")
    e.add_argument(
        "--only",
        action="append",
        metavar="CELL_OR_FAMILY",
        help="train only this family, variant, family/variant or cell folder (repeatable); the report covers all",
    )
    e.add_argument("--max-runs", type=int, default=None, metavar="K", help="train at most K runs, then report")
    e.add_argument("--report-only", action="store_true", help="only re-render tables and figure of finished runs")
    e.set_defaults(func=cmd_experiment)
