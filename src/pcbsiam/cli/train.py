"""``pcbsiam train`` (one training run from a config) and ``pcbsiam demo`` (the whole job on synthetic boards)."""

from __future__ import annotations

import argparse
import json

from pcbsiam.cli.common import StoreNamed, config_options, out_folder


def cmd_train(args: argparse.Namespace) -> int:
    """Train (or resume) one run; print its best figures as JSON when it finished."""
    from pcbsiam.config import load_config
    from pcbsiam.train.fit import fit

    cfg = load_config(args.config, args.set)
    if args.data:
        cfg.data.root = args.data  # a path as given, not read as YAML (a folder named 2024 stays text)
    summary = fit(cfg, args.out, resume=args.resume)
    if summary.get("final"):
        print(json.dumps({"run": str(args.out), "best": summary["best"], "seconds": round(summary["seconds"], 1)}))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Synthesise, train, calibrate, evaluate and inspect; print a short summary."""
    from pcbsiam.demo import format_summary, run_demo

    report = run_demo(
        args.out, boards=args.boards, size=args.size, seed=args.seed, preset=args.config, overrides=args.set
    )
    print(format_summary(report))
    return 0


def shipped_presets() -> list[str]:
    """Names of the config presets shipped with pcbsiam (``*.yaml`` in :data:`pcbsiam.config.PRESET_DIR`)."""
    from pcbsiam.config import PRESET_DIR

    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``train`` and ``demo`` to the ``pcbsiam`` parser."""
    t = sub.add_parser(
        "train",
        help="train the Siamese network",
        parents=[config_options("override, e.g. --set train.lr=0.001", data_root=True)],
    )
    t.add_argument(
        "--config", required=True, action=StoreNamed, names=shipped_presets, help="YAML file or preset: %(names)s"
    )
    t.add_argument("--out", required=True, type=out_folder, help="run folder")
    t.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    t.set_defaults(func=cmd_train)

    d = sub.add_parser(
        "demo",
        help="the whole job on synthetic boards, in a few minutes on a CPU",
        parents=[config_options("training override")],
    )
    d.add_argument("--out", default="demo_out", type=out_folder, help="output folder")
    d.add_argument("--boards", type=int, default=48, help="synthetic boards to make")
    d.add_argument("--size", type=int, default=384, help="side of a synthetic board (px)")
    d.add_argument("--seed", type=int, default=0, help="random seed")
    d.add_argument("--config", default="demo", help="training preset (demo: reference-aware; tiny: the paper's mode)")
    d.set_defaults(func=cmd_demo)
