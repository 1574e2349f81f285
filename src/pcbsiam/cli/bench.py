"""``pcbsiam bench infer`` (inference engines), ``bench inspect`` (end-to-end boards/s beside the classical
comparison) and ``bench train`` (training throughput)."""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING

from pcbsiam.cli.common import (
    PIPELINE_CHOICES,
    PIPELINE_HELP,
    StoreNamed,
    data_options,
    detector_engine_option,
    inference_of,
    inference_options,
    json_option,
    model_option,
    parse_csv,
    parse_csv_ints,
    progress_bar,
    show_progress,
    write_json_if,
)
from pcbsiam.errors import ConfigError

if TYPE_CHECKING:
    from tqdm import tqdm

DEFAULT_BACKBONES = "resnet18,resnet50"
ROWS_JSON_HELP = "also write the rows to this JSON file"


def cmd_bench_infer(args: argparse.Namespace) -> int:
    """Time the engines on each network; print a markdown table, optionally write the rows as JSON."""
    import torch

    from pcbsiam.deploy.backends import ENGINES
    from pcbsiam.deploy.bench import bench_infer, format_infer_table
    from pcbsiam.models.backbone import BACKBONES

    engines = parse_csv(args.engines)
    unknown = [e for e in engines if e not in ENGINES]
    if unknown or not engines:
        raise ConfigError(f"unknown engine(s) {unknown}; choose from {', '.join(ENGINES)}")
    batch_sizes = parse_csv_ints(args.batch_sizes)
    if args.threads:
        torch.set_num_threads(args.threads)
    items: list = []
    if args.model:
        from pcbsiam.deploy.bundle import load_bundle

        items.append(load_bundle(args.model))
    trained = {items[0].cfg.model.backbone} if items else set()
    backbones = args.backbones if args.backbones is not None else ("" if args.model else DEFAULT_BACKBONES)
    names = parse_csv(backbones)
    if [b for b in names if b not in BACKBONES]:
        raise ConfigError(f"unknown backbone(s) in {backbones!r}; choose from {', '.join(BACKBONES)}")
    items += [b for b in names if b not in trained]
    if not items:
        raise ConfigError("nothing to time: give --model or --backbones")

    def progress(row: dict) -> None:
        if show_progress():
            print(
                f"  {row['backbone']} {row['engine']} batch {row['batch_size']}: {row['patches_per_s']} patches/s",
                file=sys.stderr,
            )

    rows = bench_infer(
        items,
        engines,
        batch_sizes,
        seconds=args.seconds,
        workdir=args.workdir,
        peak_seconds=args.peak_seconds,
        progress=progress,
    )
    print(format_infer_table(rows))
    print(
        f"fp32 GEMM peak (torch.mm 1024x1024): {rows[0]['peak_gflops']} GFLOP/s, {rows[0]['threads']} thread(s), "
        f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}, "
        f"1-min load average before timing {min(r['load_avg'] for r in rows)}-{max(r['load_avg'] for r in rows)}"
    )
    write_json_if(args.json, rows)
    return 0


def cmd_bench_train(args: argparse.Namespace) -> int:
    """Print the training throughput table, optionally write the rows as JSON."""
    from pcbsiam.train.bench import bench_train, format_train_table

    rows = bench_train(parse_csv(args.backbones), parse_csv(args.modes), args.input_size, args.batch_size, args.seconds)
    print(format_train_table(rows))
    write_json_if(args.json, rows)
    return 0


def cmd_bench_inspect(args: argparse.Namespace) -> int:
    """Time whole-board inspection per engine beside the classical comparison; print one JSON row per engine."""
    import json

    import torch

    from pcbsiam.deploy.backends import ENGINES
    from pcbsiam.deploy.bench import bench_inspect
    from pcbsiam.deploy.bundle import load_bundle

    engines = parse_csv(args.engines)
    unknown = [e for e in engines if e not in ENGINES]
    if unknown or not engines:
        raise ConfigError(f"unknown engine(s) {unknown}; choose from {', '.join(ENGINES)}")
    if args.threads:
        torch.set_num_threads(args.threads)
    bundle = load_bundle(args.model, inference=inference_of(args))
    from pcbsiam.deploy.inspector import make_inspection_detector

    detector = make_inspection_detector(args.detector, engine=args.detector_engine)
    rows = []
    for name in engines:
        with progress_bar(args.boards, name) as bar:

            def tick(done: int, total: int, bar: tqdm = bar) -> None:
                bar.total = total
                bar.update(done - bar.n)

            row = bench_inspect(
                bundle,
                args.data,
                args.split,
                name,
                args.boards,
                args.batch_size,
                args.workdir,
                peak_seconds=args.peak_seconds,
                progress=tick,
                pipeline=args.pipeline,
                threads=args.threads,
                detector=detector,
            )
        print(json.dumps(row), flush=True)
        rows.append(row)
    write_json_if(args.json, rows)
    return 0


def registered_modes() -> list[str]:
    """The model modes of the registry (:func:`pcbsiam.models.list_modes`; imports torch)."""
    from pcbsiam.models import list_modes

    return list_modes()


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``bench infer`` and ``bench train`` to the ``pcbsiam`` parser."""
    b = sub.add_parser("bench", help="speed benchmarks")
    bsub = b.add_subparsers(dest="bench_command", required=True)

    i = bsub.add_parser(
        "infer",
        help="patches/s and boards/s of torch, onnx-fp32 and onnx-int8 engines",
        parents=[
            model_option("a bundle; its backbone is timed with its trained weights", required=False),
            json_option(ROWS_JSON_HELP),
        ],
    )
    i.add_argument(
        "--backbones",
        default=None,
        help=f"untrained networks (cpu-small config) to time, comma-separated (default {DEFAULT_BACKBONES} "
        "without --model, none with it)",
    )
    i.add_argument("--engines", default="torch,onnx-fp32,onnx-int8", help="comma-separated inference backends")
    i.add_argument("--batch-sizes", default="1,32", help="comma-separated patches per call")
    i.add_argument("--seconds", type=float, default=5.0, help="timing length per network, engine and batch size")
    i.add_argument("--peak-seconds", type=float, default=3.0, help="timing length of the GEMM peak")
    i.add_argument("--threads", type=int, default=None, help="torch and onnxruntime threads (default: torch's)")
    i.add_argument("--workdir", default=None, help="keep the ONNX files here (default: a temporary folder)")
    i.set_defaults(func=cmd_bench_infer)

    e = bsub.add_parser(
        "inspect",
        help="end-to-end boards/s of whole-board inspection per engine, the classical comparison beside it",
        parents=[
            model_option("calibrated bundle (any mode)"),
            data_options(cache_dir=False),
            inference_options(),
            json_option(ROWS_JSON_HELP),
        ],
    )
    e.add_argument("--engines", default="torch", help="comma-separated: torch, onnx-fp32, onnx-int8")
    e.add_argument("--boards", type=int, default=50, help="boards timed (the first of the split)")
    e.add_argument("--batch-size", type=int, default=32, help="tiles per network call")
    e.add_argument("--peak-seconds", type=float, default=3.0, help="timing length of the fp32 GEMM peak")
    e.add_argument("--threads", type=int, default=None, help="torch and onnxruntime threads (default: torch's)")
    e.add_argument("--workdir", default=None, help="keep the ONNX files here (default: a temporary folder)")
    e.add_argument("--pipeline", choices=PIPELINE_CHOICES, default="auto", help=PIPELINE_HELP)
    e.add_argument(
        "--detector",
        default=None,
        metavar="{classical,PATH}",
        help="also find typed defect boxes on every board, as `inspect --detector` does (a 'detect' stage)",
    )
    detector_engine_option(e)
    e.set_defaults(func=cmd_bench_inspect)

    t = bsub.add_parser(
        "train",
        help="training throughput per backbone and its share of the fp32 GEMM peak",
        parents=[json_option(ROWS_JSON_HELP)],
    )
    t.add_argument("--backbones", default="resnet18,resnet34,resnet50,resnet101", help="comma-separated ResNets")
    t.add_argument(
        "--modes",
        action=StoreNamed,
        names=registered_modes,
        default="paper",
        help="comma-separated model modes, as model.mode names them: %(names)s",
    )
    t.add_argument("--input-size", type=int, default=128, help="side of the input patches (px)")
    t.add_argument("--batch-size", type=int, default=16, help="items per step")
    t.add_argument("--seconds", type=float, default=20.0, help="timed seconds per row")
    t.set_defaults(func=cmd_bench_train)
