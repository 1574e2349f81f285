"""``pcbsiam export``: a calibrated bundle as a verified ONNX graph, optionally with its int8 copy."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pcbsiam.cli.common import data_options, model_option, out_file
from pcbsiam.errors import ConfigError

#: ONNX graphs of :func:`pcbsiam.deploy.export.export_onnx` (repeated here: that module imports torch).
GRAPHS = ("patches", "embeddings")


def cmd_export(args: argparse.Namespace) -> int:
    """Write the ONNX graph (and with ``--int8`` its quantised copy); print what was written as JSON."""
    from pcbsiam.deploy.bundle import load_bundle
    from pcbsiam.deploy.export import compare_with_torch, data_patches, export_onnx, quantize_int8

    if args.int8 and not args.data:
        raise ConfigError("--int8 needs --data (and --split): training patches calibrate the quantisation")
    bundle = load_bundle(args.model)
    out = export_onnx(bundle, args.onnx, graph=args.graph, opset=args.opset)
    report: dict = {
        "onnx": str(out),
        "graph": args.graph,
        "model_mode": bundle.cfg.model.mode,
        "threshold": bundle.threshold,
        "mb": _mb(out),
    }
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


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``export`` to the ``pcbsiam`` parser."""
    e = sub.add_parser(
        "export",
        help="export a bundle as a verified ONNX graph (optionally int8 too)",
        parents=[
            model_option("bundle file (or training run folder)"),
            data_options(
                required=False,
                data_help="data root whose patches calibrate the int8 graph",
                split_help="split file of --data (use a training split)",
                cache_dir=False,
            ),
        ],
    )
    e.add_argument("--onnx", required=True, type=out_file, help="ONNX file to write")
    e.add_argument(
        "--graph",
        choices=GRAPHS,
        default="patches",
        help="patches (every mode): tested + reference patches in; "
        "embeddings (the paper's mode only): tested patches + reference embeddings in",
    )
    e.add_argument("--mode", dest="graph", choices=GRAPHS, default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    e.add_argument("--opset", type=int, default=17, help="ONNX opset")
    e.add_argument("--int8", action="store_true", help="also write a static int8 (QDQ, per-channel) graph")
    e.add_argument("--int8-out", default=None, type=out_file, help="int8 file (default: ONNX name with -int8)")
    e.add_argument("--calib-patches", type=int, default=256, help="patches for int8 calibration")
    e.set_defaults(func=cmd_export)
