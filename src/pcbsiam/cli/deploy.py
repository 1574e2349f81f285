"""``pcbsiam export``: a calibrated bundle as a verified ONNX graph, optionally with its int8 copy."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pcbsiam.cli.common import file_mb, model_option, onnx_export_options
from pcbsiam.errors import ConfigError

#: ONNX graphs of :func:`pcbsiam.deploy.export.export_onnx` (repeated here: that module imports torch).
GRAPHS = ("patches", "embeddings")
#: What ``pcbsiam info`` shows of a bundle's calibration record (a cross-validation's folder or the data).
_CALIBRATION_SHOWN = ("source", "cv", "data", "split", "subset", "patches", "defective", "value")


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
        "mb": file_mb(out),
    }
    if args.int8:
        tested, reference = data_patches(bundle, args.data, args.split, n=2 * args.calib_patches, seed=0)
        n = min(args.calib_patches, len(tested) // 2) or len(tested)
        int8_path = Path(args.int8_out) if args.int8_out else out.with_name(f"{out.stem}-int8{out.suffix}")
        quantize_int8(out, int8_path, tested[:n], reference[:n])
        held = slice(n, None) if len(tested) > n else slice(None)  # patches not used for calibration, if any
        check = compare_with_torch(bundle, int8_path, tested[held], reference[held])
        report["int8"] = {"onnx": str(int8_path), "mb": file_mb(int8_path), "calibration_patches": n, "check": check}
    print(json.dumps(report, indent=2))
    return 0


def bundle_card(path: str | Path) -> dict:
    """What a bundle is: its network, patch geometry, threshold, calibration and training data, as plain data."""
    from pcbsiam.config import inference_settings
    from pcbsiam.deploy.bundle import load_bundle
    from pcbsiam.ready import card_path, examples_root, ready_name, resolve_model

    path = resolve_model(path)
    bundle = load_bundle(path)
    m = bundle.cfg.model
    cal = bundle.calibration
    ready = ready_name(path)
    return {
        "bundle": str(path),
        "ready_model": {"name": ready, "card": str(card_path(ready)), "examples": str(examples_root())}
        if ready
        else None,
        "mb": file_mb(Path(path)) if Path(path).is_file() else None,
        "network": {
            "mode": m.mode,
            "backbone": m.backbone,
            "input_size": m.input_size,
            "parameters": sum(p.numel() for p in bundle.model.parameters()),
            "score": bundle.model.score_label,
        },
        "patches": bundle.spec.to_dict(),
        "inference": inference_settings(bundle.cfg),
        "threshold": bundle.threshold,
        "policy": bundle.policy,
        "calibration": {k: cal[k] for k in _CALIBRATION_SHOWN if k in cal},
        "training_data": bundle.data or "not recorded (trained before pcbsiam recorded it)",
        "classifier_groups": len(bundle.groups),
        "registered_boards": sorted(bundle.boards),
    }


def render_card(card: dict) -> str:
    """The card of :func:`bundle_card` as aligned ``key: value`` lines."""
    lines = []
    for key, value in card.items():
        if value is None and key == "ready_model":
            continue
        if isinstance(value, dict):
            lines.append(f"{key}:")
            lines.extend(f"  {k:<18} {v}" for k, v in value.items())
        else:
            lines.append(f"{key:<20} {value}")
    data = card["training_data"]
    if isinstance(data, dict) and data.get("synthetic"):
        lines.append("note: trained on synthetic boards; on real boards expect many false alarms")
    return "\n".join(lines)


def cmd_info(args: argparse.Namespace) -> int:
    """Print what a bundle is (``--json``: as JSON)."""
    card = bundle_card(args.model)
    if args.json:
        print(json.dumps(card, indent=2, default=str))
        return 0
    print(render_card(card))
    if card["ready_model"]:  # a shipped model: its card follows, as written
        print("\n" + Path(card["ready_model"]["card"]).read_text().rstrip())
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``export`` and ``info`` to the ``pcbsiam`` parser."""
    e = sub.add_parser(
        "export",
        help="export a bundle as a verified ONNX graph (optionally int8 too)",
        parents=[
            model_option("bundle file (or training run folder)"),
            onnx_export_options(
                data_help="data root whose patches calibrate the int8 graph",
                split_help="split file of --data (use a training split)",
            ),
        ],
    )
    e.add_argument(
        "--graph",
        choices=GRAPHS,
        default="patches",
        help="patches (every mode): tested + reference patches in; "
        "embeddings (the paper's mode only): tested patches + reference embeddings in",
    )
    e.add_argument("--mode", dest="graph", choices=GRAPHS, default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    e.add_argument("--calib-patches", type=int, default=256, help="patches for int8 calibration")
    e.set_defaults(func=cmd_export)

    i = sub.add_parser("info", help="what a bundle is: network, threshold, calibration and the data it was trained on")
    from pcbsiam.ready import READY_MODELS

    i.add_argument(
        "model",
        metavar="BUNDLE",
        help=f"bundle file (or training run folder), or a ready model: {', '.join(READY_MODELS)}",
    )
    i.add_argument("--json", action="store_true", help="print JSON instead of text")
    i.set_defaults(func=cmd_info)
