"""The ``pcbsiam`` command: thin parsers over library functions."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path

from pcbsiam import __version__
from pcbsiam.errors import PcbsiamError

log = logging.getLogger("pcbsiam")


def _report_skipped(skipped: list) -> None:
    if skipped:
        print(f"skipped {len(skipped)} item(s):", file=sys.stderr)
        for err in skipped:
            print(f"  {err}", file=sys.stderr)


def cmd_data_synth(args: argparse.Namespace) -> int:
    from pcbsiam.data.synth import write_dataset

    def progress(done: int, total: int) -> None:
        if done == total or done % max(1, total // 10) == 0:
            print(f"  {done}/{total} boards", file=sys.stderr)

    split = write_dataset(
        Path(args.out), boards=args.boards, seed=args.seed, size=args.size, groups=args.groups, progress=progress
    )
    print(json.dumps({"root": str(Path(args.out)), "split": str(split), "boards": args.boards}))
    return 0


def cmd_data_stats(args: argparse.Namespace) -> int:
    from pcbsiam.data.sources import patches_of, read_boards
    from pcbsiam.data.store import load_store

    store = load_store(read_boards(args.data, args.split), cache_dir=args.cache_dir)
    stats = patches_of(store, args.patch, args.stride).stats()
    stats = {"boards": len(store), "skipped": len(store.skipped), **stats}
    print(json.dumps(stats, indent=None if args.compact else 2))
    _report_skipped(store.skipped)
    return 0


def cmd_data_show(args: argparse.Namespace) -> int:
    from pcbsiam.data.images import load_gray
    from pcbsiam.data.sources import read_boards
    from pcbsiam.viz import plot_board_pairs

    boards = read_boards(args.data, args.split)
    chosen = [p for p in boards.pairs if not args.name or p.name in args.name][: args.n]
    rows = [(load_gray(p.tested), load_gray(p.template), p.boxes, p.name) for p in chosen]
    print(plot_board_pairs(rows, args.out))
    return 0


def cmd_data_bench(args: argparse.Namespace) -> int:
    from pcbsiam.bench import bench_loader

    print(
        json.dumps(
            bench_loader(args.data, args.split, args.size, args.batch_size, args.workers, args.seconds, args.cache_dir),
            indent=2,
        )
    )
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from pcbsiam.config import load_config
    from pcbsiam.training import fit

    overrides = list(args.set or [])
    if args.data:
        overrides.append(f"data.root={args.data}")
    cfg = load_config(args.config, overrides)
    summary = fit(cfg, args.out, resume=args.resume)
    if summary.get("final"):
        print(json.dumps({"run": str(args.out), "best": summary["best"], "seconds": round(summary["seconds"], 1)}))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from pcbsiam.demo import format_summary, run_demo

    report = run_demo(
        args.out, boards=args.boards, size=args.size, seed=args.seed, preset=args.config, overrides=args.set
    )
    print(format_summary(report))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every sub-command."""
    p = argparse.ArgumentParser(prog="pcbsiam", description="Siamese feature-fusion ResNet for PCB defect inspection")
    p.add_argument("--version", action="version", version=f"pcbsiam {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True)

    data = sub.add_parser("data", help="data sets: synthesise boards, count patches, time the loader")
    dsub = data.add_subparsers(dest="data_command", required=True)
    s = dsub.add_parser("synth", help="write synthetic DeepPCB-like boards in the DeepPCB layout")
    s.add_argument("--out", required=True, help="output root (PCBData/ is created inside)")
    s.add_argument("--boards", type=int, default=40, help="number of board pairs")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--size", type=int, default=640, help="board side in pixels")
    s.add_argument("--groups", type=int, default=4, help="number of PCB designs (groups)")
    s.set_defaults(func=cmd_data_synth)

    def data_args(q: argparse.ArgumentParser) -> None:
        q.add_argument("--data", required=True, help="DeepPCB root (holding PCBData/) or paper layout root")
        q.add_argument("--split", default="trainval.txt", help="split file (DeepPCB layout)")
        q.add_argument("--cache-dir", default=None, help="memory-map decoded boards from here")

    s = dsub.add_parser("stats", help="DeepPCB-Cls patch counts as one JSON object")
    data_args(s)
    s.add_argument("--patch", type=int, default=128)
    s.add_argument("--stride", type=int, default=None)
    s.add_argument("--compact", action="store_true", help="one-line JSON")
    s.set_defaults(func=cmd_data_stats)
    s = dsub.add_parser("show", help="draw template and tested image with their defect boxes (PNG)")
    data_args(s)
    s.add_argument("--out", required=True, help="PNG to write")
    s.add_argument("--n", type=int, default=2, help="number of items")
    s.add_argument("--name", action="append", help="item name(s) to draw, e.g. 20085000")
    s.set_defaults(func=cmd_data_show)
    s = dsub.add_parser("bench", help="patches/s of the training loader")
    data_args(s)
    s.add_argument("--size", type=int, default=128)
    s.add_argument("--batch-size", type=int, default=64)
    s.add_argument("--workers", type=int, default=0)
    s.add_argument("--seconds", type=float, default=10.0)
    s.set_defaults(func=cmd_data_bench)

    t = sub.add_parser("train", help="train the Siamese network")
    t.add_argument("--config", required=True, help="YAML file or preset name (cpu-small, paper, tiny)")
    t.add_argument("--data", default=None, help="data root (overrides data.root)")
    t.add_argument("--set", action="append", metavar="KEY=VALUE", help="override, e.g. --set train.lr=0.001")
    t.add_argument("--out", required=True, help="run folder")
    t.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    t.set_defaults(func=cmd_train)
    d = sub.add_parser("demo", help="the whole job on synthetic boards, in a few minutes on a CPU")
    d.add_argument("--out", default="demo_out", help="output folder")
    d.add_argument("--boards", type=int, default=48)
    d.add_argument("--size", type=int, default=384)
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--config", default="demo", help="training preset (demo: reference-aware; tiny: the paper's mode)")
    d.add_argument("--set", action="append", metavar="KEY=VALUE", help="training override")
    d.set_defaults(func=cmd_demo)
    for register in _EXTRA:
        register(sub)
    return p


def _extra_commands() -> list[Callable[[argparse._SubParsersAction], None]]:
    from pcbsiam import cli_deploy, cli_eval, cli_experiment, cli_serve

    return [cli_eval.register, cli_experiment.register, cli_deploy.register, cli_serve.register]


_EXTRA = _extra_commands()


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``pcbsiam`` console script."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    t0 = time.perf_counter()
    try:
        return int(args.func(args) or 0)
    except PcbsiamError as exc:
        print(f"pcbsiam: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("pcbsiam: interrupted", file=sys.stderr)
        return 130
    finally:
        log.debug("done in %.1f s", time.perf_counter() - t0)


if __name__ == "__main__":
    sys.exit(main())
