"""Sub-commands ``experiment`` (the paper's ablation tables from a grid of repeated trainings), ``cv``
(leave-one-group-out cross-validation) and ``cv-detector`` (the learned detector on the same folds)."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys

from pcbsiam.cli.common import bounded, config_options, device_option, out_folder, progress_bar
from pcbsiam.config import VIEW_COUNTS
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


def cmd_cv(args: argparse.Namespace) -> int:
    """Run (or continue) the folds, or only re-render the report; print the pooled table."""
    from pcbsiam.evaluation.calibration import parse_policy
    from pcbsiam.experiment.cv import cv_report, run_cv

    extra = args.policy or []
    for policy in extra:
        parse_policy(policy)  # a sentence before anything trains
    if args.report_only:
        result = cv_report(args.out, extra)
    else:
        if not args.config:
            raise ConfigError(
                "--config is required (a preset such as cpu-stack-band, or a YAML file) unless --report-only"
            )
        from pcbsiam.config import load_config

        cfg = load_config(args.config, args.set)
        if args.data:
            cfg.data.root = args.data
        result = run_cv(
            cfg,
            args.out,
            str(args.config),
            only=args.only,
            calib_patches=args.calib_patches,
            device=args.device,
            extra_policies=extra,
        )
    print(json.dumps({"folds_done": result["done"], "folds": result["of"]}), file=sys.stderr)
    from pcbsiam.experiment.cv import render_cv

    print(render_cv(result))
    return 0


def cmd_cv_detector(args: argparse.Namespace) -> int:
    """Train, detect and score each finished fold's detector (resumable), or only re-render; print the table."""
    from pcbsiam.experiment.cv_detector import (
        DetectorFoldSettings,
        detector_report,
        render_detector,
        run_cv_detector,
    )

    if args.report_only:
        result = detector_report(args.out, args.data)
    else:
        settings = DetectorFoldSettings(args.epochs, args.seed, args.views, args.fine_band, args.device)
        with contextlib.ExitStack() as stack:

            def bar(group: str, boards: int):  # noqa: ANN202
                return stack.enter_context(progress_bar(boards, f"detect {group}")).update

            result = run_cv_detector(args.out, args.data, args.only, settings, bar)
    print(json.dumps({"folds_done": result["done"], "folds": result["of"]}), file=sys.stderr)
    print(render_detector(result))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``experiment``, ``cv`` and ``cv-detector`` to the ``pcbsiam`` parser."""
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
    e.add_argument("--out", required=True, type=out_folder, help="experiment folder")
    e.add_argument(
        "--only",
        action="append",
        metavar="CELL_OR_FAMILY",
        help="train only this family, variant, family/variant or cell folder (repeatable); the report covers all",
    )
    e.add_argument("--max-runs", type=int, default=None, metavar="K", help="train at most K runs, then report")
    e.add_argument("--report-only", action="store_true", help="only re-render tables and figure of finished runs")
    e.set_defaults(func=cmd_experiment)

    c = sub.add_parser(
        "cv",
        help="leave-one-group-out cross-validation: train on all PCB groups but one, score the one left out",
        description="One fold per group of the data: train the config without that group (DIR/fold-<group>/, "
        "resumed when interrupted), calibrate its threshold on its training patches at the accuracy and "
        "recall:0.995 policies, score the held-out group beside the classical comparison calibrated the same "
        "way; then write per-fold and pooled figures to DIR/results.json and DIR/cv.md, also with each fold's "
        "threshold chosen on the other folds' held-out scores (out-of-group: what `pcbsiam calibrate --from-cv DIR` "
        "gives a model trained on every group). Repeating the command skips finished folds.",
        parents=[config_options("config override, e.g. train.epochs=4", data_root=True), device_option()],
    )
    c.add_argument("--config", default=None, help="YAML file or shipped preset (e.g. cpu-stack-band, cpu-small)")
    c.add_argument("--out", required=True, type=out_folder, help="cross-validation folder")
    c.add_argument("--only", action="append", metavar="GROUP", help="hold out only this group (repeatable)")
    c.add_argument(
        "--calib-patches", type=int, default=4000, help="training patches each threshold is calibrated on (random)"
    )
    c.add_argument(
        "--policy",
        action="append",
        metavar="POLICY",
        help="also report out-of-group calibration at this policy, e.g. recall:0.998 (repeatable; no training)",
    )
    c.add_argument("--report-only", action="store_true", help="only re-render the report of the finished folds")
    c.set_defaults(func=cmd_cv)

    d = sub.add_parser(
        "cv-detector",
        help="the learned detector beside a cross-validation's tile model: per fold, alone and together",
        description="For each finished fold of a `pcbsiam cv` folder: train the learned detector's verifier on the "
        "fold's training boards (DIR/fold-<group>/detector/), detect the held-out boards (DIR/fold-<group>/"
        "detections/, DeepPCB result files) and score every protocol patch by the detections with at least half "
        "of their box inside it; then write DIR/detector.json and DIR/detector.md: the tile model at its "
        "out-of-group threshold, the detector, and either of them; and the detections scored as boxes by DeepPCB's "
        "protocol, per held-out design and pooled. Repeating the command skips finished steps.",
        parents=[device_option()],
    )
    d.add_argument("--out", required=True, type=out_folder, help="the cross-validation folder of `pcbsiam cv`")
    d.add_argument(
        "--data", default=None, help="DeepPCB root, also for --report-only (default: the cross-validation's data.root)"
    )
    d.add_argument("--only", action="append", metavar="GROUP", help="this held-out group's fold only (repeatable)")
    d.add_argument("--epochs", type=bounded(int, 1, 10**6), default=6, help="the verifier's passes over its windows")
    d.add_argument("--seed", type=int, default=0, help="the verifier's training seed")
    d.add_argument("--views", type=int, choices=VIEW_COUNTS, default=4, help="test-time views of each candidate")
    d.add_argument(
        "--fine-band", type=bounded(int, 0, 1), default=1, metavar="PX", help="the finer band's candidates (0: none)"
    )
    d.add_argument("--report-only", action="store_true", help="only re-render the report of the finished folds")
    d.set_defaults(func=cmd_cv_detector)
