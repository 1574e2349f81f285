"""Deployment sub-commands: ``pcbsiam export`` (ONNX, optional int8) and ``pcbsiam bench infer``.

Registered in :mod:`pcbsiam.cli` by appending :func:`register` to ``_EXTRA``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from pcbsiam.errors import ConfigError

DEFAULT_BACKBONES = "resnet18,resnet50"


def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _csv_ints(text: str) -> list[int]:
    try:
        values = [int(t) for t in _csv(text)]
    except ValueError as exc:
        raise ConfigError(f"batch sizes must be comma-separated integers, e.g. 1,32; got {text!r}") from exc
    if not values or min(values) < 1:
        raise ConfigError(f"batch sizes must be positive integers, got {text!r}")
    return values


def cmd_export(args: argparse.Namespace) -> int:
    """Write the ONNX graph (and with ``--int8`` its quantised copy); print what was written as JSON."""
    from pcbsiam.bundle import load_bundle
    from pcbsiam.export import compare_with_torch, data_patches, export_onnx, quantize_int8

    if args.int8 and not args.data:
        raise ConfigError("--int8 needs --data (and --split): training patches calibrate the quantisation")
    bundle = load_bundle(args.model)
    out = export_onnx(bundle, args.onnx, mode=args.mode, opset=args.opset)
    report: dict = {"onnx": str(out), "mode": args.mode, "threshold": bundle.threshold, "mb": _mb(out)}
    if args.int8:
        tested, reference = data_patches(bundle, args.data, args.split, n=2 * args.calib_patches, seed=0)
        n = min(args.calib_patches, len(tested) // 2) or len(tested)
        int8_path = Path(args.int8_out) if args.int8_out else out.with_name(f"{out.stem}-int8{out.suffix}")
        quantize_int8(out, int8_path, tested[:n], reference[:n])
        held = slice(n, None) if len(tested) > n else slice(None)  # patches not used for calibration, if any
        check = compare_with_torch(bundle, int8_path, tested[held], reference[held])
        report["int8"] = {"onnx": str(int8_path), "mb": _mb(int8_path), "calibration_patches": n, "check": check}
    print(json.dumps(report, indent=2))
    return 0


def _mb(path: Path) -> float:
    return round(path.stat().st_size / 2**20, 1)


def cmd_bench_infer(args: argparse.Namespace) -> int:
    """Time the engines on each network; print a markdown table, optionally write the rows as JSON."""
    import torch

    from pcbsiam.bench import bench_infer, format_infer_table
    from pcbsiam.engines import ENGINES
    from pcbsiam.io import write_json

    engines = _csv(args.engines)
    unknown = [e for e in engines if e not in ENGINES]
    if unknown or not engines:
        raise ConfigError(f"unknown engine(s) {unknown}; choose from {', '.join(ENGINES)}")
    batch_sizes = _csv_ints(args.batch_sizes)
    if args.threads:
        torch.set_num_threads(args.threads)
    items: list = []
    if args.model:
        from pcbsiam.bundle import load_bundle

        items.append(load_bundle(args.model))
    trained = {items[0].cfg.model.backbone} if items else set()
    backbones = args.backbones if args.backbones is not None else ("" if args.model else DEFAULT_BACKBONES)
    names = _csv(backbones)
    from pcbsiam.models.backbone import BACKBONES

    if [b for b in names if b not in BACKBONES]:
        raise ConfigError(f"unknown backbone(s) in {backbones!r}; choose from {', '.join(BACKBONES)}")
    items += [b for b in names if b not in trained]
    if not items:
        raise ConfigError("nothing to time: give --model or --backbones")

    def progress(row: dict) -> None:
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
    if args.json:
        write_json(args.json, rows)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``export`` and ``bench infer`` to the ``pcbsiam`` parser."""
    e = sub.add_parser("export", help="export a bundle as a verified ONNX graph (optionally int8 too)")
    e.add_argument("--model", required=True, help="bundle file (or training run folder)")
    e.add_argument("--onnx", required=True, help="ONNX file to write")
    e.add_argument(
        "--mode",
        choices=("patches", "embeddings"),
        default="patches",
        help="patches: tested + reference patches in; embeddings: tested patches + reference embeddings in",
    )
    e.add_argument("--opset", type=int, default=17)
    e.add_argument("--int8", action="store_true", help="also write a static int8 (QDQ, per-channel) graph")
    e.add_argument("--int8-out", default=None, help="int8 file (default: ONNX name with -int8)")
    e.add_argument("--data", default=None, help="data root whose patches calibrate the int8 graph")
    e.add_argument("--split", default="trainval.txt", help="split file of --data (use a training split)")
    e.add_argument("--calib-patches", type=int, default=256, help="patches for int8 calibration")
    e.set_defaults(func=cmd_export)

    b = sub.add_parser("bench", help="speed benchmarks")
    bsub = b.add_subparsers(dest="bench_command", required=True)
    i = bsub.add_parser("infer", help="patches/s and boards/s of torch, onnx-fp32 and onnx-int8 engines")
    i.add_argument("--model", default=None, help="a bundle; its backbone is timed with its trained weights")
    i.add_argument(
        "--backbones",
        default=None,
        help=f"untrained networks (cpu-small config) to time, comma-separated (default {DEFAULT_BACKBONES} "
        "without --model, none with it)",
    )
    i.add_argument("--engines", default="torch,onnx-fp32,onnx-int8")
    i.add_argument("--batch-sizes", default="1,32")
    i.add_argument("--seconds", type=float, default=5.0, help="timing length per network, engine and batch size")
    i.add_argument("--peak-seconds", type=float, default=3.0, help="timing length of the GEMM peak")
    i.add_argument("--threads", type=int, default=None, help="torch and onnxruntime threads (default: torch's)")
    i.add_argument("--workdir", default=None, help="keep the ONNX files here (default: a temporary folder)")
    i.add_argument("--json", default=None, help="also write the rows to this JSON file")
    i.set_defaults(func=cmd_bench_infer)
    t = bsub.add_parser("train", help="training throughput per backbone and its share of the fp32 GEMM peak")
    t.add_argument("--backbones", default="resnet18,resnet34,resnet50,resnet101")
    t.add_argument("--modes", default="paper", help="paper, diff or both (comma-separated)")
    t.add_argument("--input-size", type=int, default=128)
    t.add_argument("--batch-size", type=int, default=16)
    t.add_argument("--seconds", type=float, default=20.0, help="timed seconds per row")
    t.add_argument("--json", default=None, help="also write the rows to this JSON file")
    t.set_defaults(func=cmd_bench_train)


def cmd_bench_train(args: argparse.Namespace) -> int:
    """Print the training throughput table."""
    from pcbsiam.bench import bench_train, format_train_table

    rows = bench_train(args.backbones.split(","), args.modes.split(","), args.input_size, args.batch_size, args.seconds)
    print(format_train_table(rows))
    if args.json:
        from pcbsiam.io import write_json

        write_json(args.json, rows)
    return 0
