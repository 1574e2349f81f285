"""``pcbsiam data synth|stats|show|bench``: synthesise boards, count patches, draw pairs, time the loader."""

from __future__ import annotations

import argparse
import json
from difflib import SequenceMatcher
from pathlib import Path
from typing import TYPE_CHECKING

from pcbsiam.cli.common import (
    data_options,
    out_file,
    out_folder,
    out_folder_or,
    progress,
    report_skipped,
    single_output,
)
from pcbsiam.errors import ConfigError

if TYPE_CHECKING:
    from pcbsiam.data.records import BoardPair


def cmd_data_synth(args: argparse.Namespace) -> int:
    """Write synthetic boards in the DeepPCB layout; print the root and split file as JSON."""
    from pcbsiam.data.synth import write_dataset

    split = write_dataset(
        Path(args.out),
        boards=args.boards,
        seed=args.seed,
        size=args.size,
        groups=args.groups,
        progress=lambda done, total: progress(done, total, total // 10),
    )
    print(json.dumps({"root": str(Path(args.out)), "split": str(split), "boards": args.boards}))
    return 0


def cmd_data_stats(args: argparse.Namespace) -> int:
    """Print the DeepPCB-Cls patch counts of a data set as one JSON object."""
    from pcbsiam.data.sources import no_readable_items, patches_of, read_boards
    from pcbsiam.data.store import load_store

    store = load_store(read_boards(args.data, args.split), cache_dir=args.cache_dir)
    if len(store) == 0:
        raise no_readable_items(args.data, f"the split {args.split}", store.skipped)
    stats = patches_of(store, args.patch, args.stride).stats()
    stats = {"boards": len(store), "skipped": len(store.skipped), **stats}
    print(json.dumps(stats, indent=None if args.compact else 2))
    report_skipped(store.skipped)
    return 0


def cmd_data_show(args: argparse.Namespace) -> int:
    """Draw template and tested image of some items with their defect boxes; print the PNG's path."""
    from pcbsiam.data.images import load_gray
    from pcbsiam.data.sources import no_readable_items, read_boards
    from pcbsiam.viz.overlay import plot_board_pairs

    out = single_output(args.png, args.out, "boards.png", "png")
    if out is None:
        raise ConfigError("give --out DIR (boards.png is written there) or --png FILE")
    boards = read_boards(args.data, args.split)
    if not boards.pairs:
        raise no_readable_items(args.data, f"the split {args.split}", boards.skipped)
    chosen = choose_items(boards.pairs, args.name, args.n, f"the split {args.split} of {args.data}")
    rows = [(load_gray(p.tested), load_gray(p.template), p.boxes, p.name) for p in chosen]
    print(plot_board_pairs(rows, out))
    report_skipped(boards.skipped)
    return 0


def choose_items(pairs: list[BoardPair], names: list[str] | None, n: int, source: str) -> list[BoardPair]:
    """The items ``data show`` draws: those named, in the order given, or else the first ``n``.

    Args:
        pairs: the readable items of the data set.
        names: item names (``--name``, repeatable); ``None`` or empty: the first ``n`` items.
        n: how many items to draw when none is named (``--n``).
        source: where the items come from, for the error (``the split trainval.txt of ROOT``).

    Raises:
        ConfigError: a name that is not an item of ``pairs`` (the sentence names some that are), or
            ``n`` below 1.
    """
    if not names:
        if n < 1:
            raise ConfigError(f"--n must be at least 1 (the number of items to draw), got {n}")
        return pairs[:n]
    by_name = {p.name: p for p in pairs}
    missing = [name for name in dict.fromkeys(names) if name not in by_name]
    if missing:
        known = sorted(by_name)
        near = list(dict.fromkeys(c for m in missing for c in _closest(m, known)))
        shown = near or known[:5]
        more = ", ..." if not near and len(known) > len(shown) else ""
        unknown = ", ".join(repr(m) for m in missing)
        raise ConfigError(
            f"{source} has no item named {unknown}; it has {len(known)} items "
            f"({'closest' if near else 'e.g.'} {', '.join(shown)}{more}): give --name one of them"
        )
    return [by_name[name] for name in dict.fromkeys(names)]


def _closest(name: str, known: list[str], k: int = 3, cutoff: float = 0.6) -> list[str]:
    """Up to ``k`` of ``known`` most like ``name`` (similarity at least ``cutoff``), ties in name order."""
    scored = sorted((-SequenceMatcher(None, name, other).ratio(), other) for other in known)
    return [other for score, other in scored[:k] if -score >= cutoff]


def cmd_data_bench(args: argparse.Namespace) -> int:
    """Print the training loader's throughput as JSON."""
    from pcbsiam.train.bench import bench_loader

    report = bench_loader(args.data, args.split, args.size, args.batch_size, args.workers, args.seconds, args.cache_dir)
    print(json.dumps(report, indent=2))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``data`` and its sub-commands to the ``pcbsiam`` parser."""
    data = sub.add_parser("data", help="data sets: synthesise boards, count patches, time the loader")
    dsub = data.add_subparsers(dest="data_command", required=True)

    s = dsub.add_parser("synth", help="write synthetic DeepPCB-like boards in the DeepPCB layout")
    s.add_argument("--out", required=True, type=out_folder, help="output root (PCBData/ is created inside)")
    s.add_argument("--boards", type=int, default=40, help="number of board pairs")
    s.add_argument("--seed", type=int, default=0, help="random seed")
    s.add_argument("--size", type=int, default=640, help="board side in pixels")
    s.add_argument("--groups", type=int, default=4, help="number of PCB designs (groups)")
    s.set_defaults(func=cmd_data_synth)

    s = dsub.add_parser("stats", help="DeepPCB-Cls patch counts as one JSON object", parents=[data_options()])
    s.add_argument("--patch", type=int, default=128, help="protocol patch side (px)")
    s.add_argument("--stride", type=int, default=None, help="grid step (px; default: the patch side)")
    s.add_argument("--compact", action="store_true", help="one-line JSON")
    s.set_defaults(func=cmd_data_stats)

    s = dsub.add_parser(
        "show",
        help="draw template and tested image with their defect boxes (PNG)",
        parents=[data_options(cache_dir=False)],
    )
    s.add_argument("--out", default=None, type=out_folder_or(".png"), help="folder for boards.png")
    s.add_argument("--png", default=None, type=out_file, help="PNG file to write (instead of --out DIR)")
    s.add_argument("--n", type=int, default=2, help="number of items (the first of the split) when no --name is given")
    s.add_argument("--name", action="append", help="an item to draw, e.g. 20085000 (repeat for more; all are drawn)")
    s.set_defaults(func=cmd_data_show)

    s = dsub.add_parser("bench", help="patches/s of the training loader", parents=[data_options()])
    s.add_argument("--size", type=int, default=128, help="side of the network input (px)")
    s.add_argument("--batch-size", type=int, default=64, help="items per batch")
    s.add_argument("--workers", type=int, default=0, help="loader worker processes")
    s.add_argument("--seconds", type=float, default=10.0, help="timing length")
    s.set_defaults(func=cmd_data_bench)
