"""Sub-commands detect, evaluate-detections, train-detector and export-detector: typed defect boxes in the
DeepPCB benchmark's format, their score against the annotations, the learned detector's training and its
verifier's ONNX graphs."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pcbsiam.cli.common import (
    bounded,
    data_options,
    device_option,
    file_mb,
    json_option,
    model_option,
    onnx_export_options,
    out_folder,
    parse_csv,
    progress,
    quiet,
    report_skipped,
    write_json_if,
)
from pcbsiam.config import VIEW_COUNTS
from pcbsiam.detection.factory import DETECTORS
from pcbsiam.errors import ConfigError, DataError, PcbsiamError

if TYPE_CHECKING:
    import numpy as np

    from pcbsiam.data.records import BoardPair
    from pcbsiam.detection.factory import Detector
    from pcbsiam.detection.learned import WindowSpec
    from pcbsiam.detection.records import Detections

DEEPPCB_HELP = "DeepPCB root (holding PCBData/)"

#: Items of ``--data`` a command can keep (see :func:`select_boards`).
SUBSETS = ("all", "val", "train")


def select_boards(
    data: str, split: str, subset: str | None, holdout_groups: str | None
) -> tuple[list[BoardPair], list[str], str]:
    """The annotated items of a DeepPCB split that ``subset`` keeps.

    Without ``holdout_groups`` the subsets follow the whole-image split training uses by default
    (:func:`~pcbsiam.data.sampler.split_by_image`, 10 %, seed 0, over the readable items); with them, as
    training with ``data.holdout_groups`` does, ``val`` is the items of those groups and ``train`` the others.

    Args:
        data: DeepPCB root.
        split: split file.
        subset: ``all``, ``val`` or ``train``; ``None``: ``val`` with ``holdout_groups``, else ``all``.
        holdout_groups: comma-separated PCB groups (``group12000`` or ``12000``), or ``None``.

    Returns:
        The kept items in split order, the items the reader skipped (one sentence each) and the subset's name.

    Raises:
        PcbsiamError: no readable item, whole-image labels instead of boxes, an unknown group or an empty subset.
    """
    from pcbsiam.data.sampler import split_by_image
    from pcbsiam.data.sources import no_readable_items, read_boards

    groups = parse_csv(holdout_groups) if holdout_groups is not None else []
    if holdout_groups is not None and not groups:
        raise ConfigError("--holdout-groups needs PCB group names, e.g. --holdout-groups group12000,group13000")
    subset = subset or ("val" if groups else "all")
    boards = read_boards(data, split)
    skipped = [str(e) for e in boards.skipped]
    if not boards.pairs:
        raise no_readable_items(data, f"the split {split}", skipped)
    if any(p.label is not None for p in boards.pairs):
        raise DataError(
            data, "holds whole-image labels (the paper's layout), not defect boxes; give a DeepPCB layout instead"
        )
    present = boards.groups
    if groups:
        groups = [g if g in present or f"group{g}" not in present else f"group{g}" for g in groups]
        unknown = [g for g in groups if g not in present]
        if unknown:
            raise ConfigError(
                f"--holdout-groups names unknown group(s) {', '.join(unknown)}; the data's groups are "
                f"{', '.join(present)}"
            )
        val = {i for i, p in enumerate(boards.pairs) if p.group in groups}
    else:
        val = {int(i) for i in split_by_image(boards.pairs, 0.1, 0)[1]}
    keep = [p for i, p in enumerate(boards.pairs) if subset == "all" or (i in val) == (subset == "val")]
    if not keep:
        raise DataError(data, f"the {subset!r} subset of {split} holds no item; choose another --subset")
    return keep, skipped, subset


def _detect_pair(
    detector: Detector, tested_path: str | Path, template_path: str | Path
) -> tuple[np.ndarray, Detections, float]:
    """Load a pair and detect its defects: the (H, W) uint8 tested image, the detections and the seconds
    ``detect`` took (image decoding excluded).

    Raises:
        PcbsiamError: an image cannot be read, or the pair cannot be compared (sizes differ, no registration).
    """
    from pcbsiam.data.images import load_gray

    tested, template = load_gray(tested_path), load_gray(template_path)
    t0 = time.perf_counter()
    try:
        found = detector.detect(tested, template)
    except PcbsiamError:
        raise
    except ValueError as exc:  # the detectors' sentences about the pair (shapes, sizes)
        raise DataError(tested_path, str(exc)) from None
    return tested, found, time.perf_counter() - t0


def _shift(found: Detections) -> dict[str, Any]:
    return {"dy": int(found.shift.dy), "dx": int(found.shift.dx), "score": round(float(found.shift.score), 4)}


def cmd_detect(args: argparse.Namespace) -> int:
    from pcbsiam.detection.factory import make_detector

    if args.batch:
        if args.tested or args.template:
            raise ConfigError("--batch reads its pairs from --data or --pairs; drop --tested and --template")
        if bool(args.data) == bool(args.pairs):
            raise ConfigError("--batch needs either --data ROOT [--split FILE] or --pairs DIR")
        if args.pairs and (args.subset or args.holdout_groups is not None):
            raise ConfigError("--subset and --holdout-groups choose items of --data; a --pairs folder has no split")
    else:
        if not (args.tested and args.template):
            raise ConfigError("give --tested IMG and --template IMG, or --batch with --data ROOT or --pairs DIR")
        if args.data or args.pairs:
            raise ConfigError("--data and --pairs are read with --batch only; add --batch")
    if args.views_below is not None and args.views == 1:
        raise ConfigError("--views-below chooses which windows get the other views: give --views 2, 4 or 8 too")
    detector = make_detector(args.method, args.model, args.device, args.views, args.fine_band, args.views_below)
    if args.engine != "torch":
        if args.method != "learned":
            raise ConfigError("--engine runs a learned detector's verifier; the classical detector has none")
        from pcbsiam.deploy.verifier import onnx_detector

        detector = onnx_detector(detector, args.engine)
    return _detect_batch(args, detector) if args.batch else _detect_one(args, detector)


def _detect_one(args: argparse.Namespace, detector: Detector) -> int:
    """Detect on one pair: ``OUT/report.json`` and ``OUT/overlay.png``."""
    from pcbsiam.io import write_json
    from pcbsiam.viz.overlay import render_detections

    out = Path(args.out)
    tested, found, seconds = _detect_pair(detector, args.tested, args.template)
    rows = found.as_array()
    report = {
        "tested": str(args.tested),
        "template": str(args.template),
        "method": args.method,
        "views": args.views,
        "engine": args.engine,
        "shift": _shift(found),
        "seconds": round(seconds, 4),
        "detections": found.records(),
    }
    write_json(out / "report.json", report)
    render_detections(tested, rows, out / "overlay.png")
    print(
        json.dumps(
            {
                "detections": len(rows),
                "types": dict(Counter(d["type"] for d in report["detections"])),
                "shift": report["shift"],
                "seconds": report["seconds"],
                "report": str(out / "report.json"),
                "overlay": str(out / "overlay.png"),
            }
        )
    )
    return 0


def _detect_batch(args: argparse.Namespace, detector: Detector) -> int:
    """Detect on every pair of ``--data`` (its subset) or ``--pairs``: ``OUT/results/<name>.txt`` each, and
    with annotations ``OUT/detection.json`` and ``OUT/detection.md``."""
    import numpy as np

    from pcbsiam.cli.evaluate import _pairs_in_folder
    from pcbsiam.data.deeppcb import read_detections, write_detections
    from pcbsiam.data.sources import no_readable_items

    out = Path(args.out)
    annotated: list[BoardPair] | None = None
    if args.pairs:
        items = _pairs_in_folder(Path(args.pairs))
        skipped: list[str] = []
        subset, where, source = None, args.pairs, "the folder"
    else:
        annotated, skipped, subset = select_boards(args.data, args.split, args.subset, args.holdout_groups)
        items = [(p.name, p.tested, p.template) for p in annotated]
        where, source = args.data, f"the {subset!r} subset of {args.split}"
    for s in skipped:
        print(f"skipped: {s}", file=sys.stderr)
    results = out / "results"
    found: dict[str, np.ndarray] = {}
    seconds = 0.0
    for n, (name, tested_path, template_path) in enumerate(items, 1):
        try:
            _, det, took = _detect_pair(detector, tested_path, template_path)
        except PcbsiamError as exc:
            skipped.append(f"{name}: {exc}")
            print(f"skipped: {name}: {exc}", file=sys.stderr)
        else:
            # scored as written: the benchmark reads integer corners
            found[name] = read_detections(write_detections(results, name, det.as_array()))
            seconds += took
        progress(n, len(items), 25)
    if not found:  # nothing detected on: refuse rather than report an empty batch
        raise no_readable_items(where, source, skipped)
    timing = {
        "boards": len(found),
        "seconds": round(seconds, 3),
        "boards_per_s": round(len(found) / seconds, 2) if seconds > 0 else None,
        "method": args.method,
        "views": args.views,
        "fine_band": args.fine_band,
        "views_below": args.views_below,
        "engine": args.engine,
    }
    if annotated is None:
        print(
            json.dumps(
                timing
                | {"detections": sum(len(a) for a in found.values()), "skipped": len(skipped), "results": str(results)}
            )
        )
        return 0
    from pcbsiam.evaluation.detection import evaluate_detections, render_report
    from pcbsiam.io import write_json, write_text

    # a pair that could not be processed has no result file: the benchmark reads that as no detection
    report = evaluate_detections((p.name, p.boxes, found.get(p.name, np.zeros((0, 6)))) for p in annotated)
    rep = report.to_dict() | timing | {"subset": subset, "skipped": skipped}
    if args.holdout_groups is not None:
        rep["holdout_groups"] = parse_csv(args.holdout_groups)
    rep |= {"data": str(args.data), "split": str(args.split), "results": str(results)}
    write_json(out / "detection.json", rep)
    held = f" (held-out groups {', '.join(rep['holdout_groups'])})" if "holdout_groups" in rep else ""
    seen = f", {args.views} test-time views" if args.views > 1 else ""
    seen += f", {args.fine_band} px band's candidates too" if args.fine_band else ""
    title = f"# {args.method} detector{seen}: {subset!r} subset of {args.split}{held}, {len(found)} boards\n\n"
    write_text(out / "detection.md", title + render_report(report))
    print(
        json.dumps(
            {k: round(rep[k], 4) for k in ("precision", "recall", "f_score", "ap")}
            | {"boards": len(found), "boards_per_s": timing["boards_per_s"], "skipped": len(skipped)}
            | {"report": str(out / "detection.json")}
        )
    )
    return 0


def cmd_evaluate_detections(args: argparse.Namespace) -> int:
    from pcbsiam.evaluation.detection import evaluate_folder, render_report

    pairs, skipped, subset = select_boards(args.data, args.split, args.subset, args.holdout_groups)
    report_skipped(skipped)
    folder = Path(args.results)
    if folder.is_dir() and not any((folder / f"{p.name}.txt").is_file() for p in pairs):
        print(
            f"warning: {folder} holds no result file of the {len(pairs)} items evaluated; each counts as no detection",
            file=sys.stderr,
        )
    report = evaluate_folder(folder, pairs)
    print(render_report(report), end="")
    rep = report.to_dict() | {"subset": subset, "data": str(args.data), "split": str(args.split)}
    write_json_if(args.json, rep | {"results": str(folder), "skipped": skipped}, announce=True)
    return 0


def window_spec(fine_band: int = 0, fine_extra: bool = False, grow: float = 1.5) -> WindowSpec:
    """The verifier's windows (``grow`` times a candidate's longer side) and candidates, with the missing copper
    a ``fine_band``-px band sees proposed too (0: none) and, with ``fine_extra``, the extra copper it sees as well.

    Raises:
        ConfigError: ``fine_extra`` without a ``fine_band``.
    """
    from pcbsiam.detection.learned import WindowSpec

    if fine_extra and not fine_band:
        raise ConfigError("--fine-extra proposes what the finer band sees: give --fine-band 1 with it")
    spec = WindowSpec(grow=grow)
    more = (("fine_k", fine_band),) if fine_band else ()
    more += (("fine_extra", True),) if fine_extra else ()
    return replace(spec, candidates=(*spec.candidates, *more))


def cmd_train_detector(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from pcbsiam.models.detector import VerifierConfig
    from pcbsiam.train.detector import DetectorTrainConfig, train_detector

    spec = window_spec(args.fine_band, args.fine_extra, args.window_grow)
    pairs, skipped, _ = select_boards(args.data, args.split, "train", args.holdout_groups)
    report_skipped(skipped)
    bars: list[tqdm] = []

    def bar(stage: str, total: int, _: int):  # noqa: ANN202
        for b in bars:
            b.close()
        unit = "board" if stage == "candidates" else "window"
        bars[:] = [tqdm(total=total, desc=stage, unit=unit, leave=False, disable=True if quiet() else None)]
        return bars[0].update

    cfg = DetectorTrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed)
    record = {
        "data": str(args.data),
        "split": str(args.split),
        "subset": "train",
        "holdout_groups": parse_csv(args.holdout_groups) if args.holdout_groups else [],
        "items": [p.name for p in pairs],
    }
    _, facts = train_detector(
        pairs,
        args.out,
        VerifierConfig(backbone=args.backbone, rule_types=args.rule_types, input_size=args.input_size),
        spec,
        cfg,
        args.device,
        bar,
        record,
    )
    for b in bars:
        b.close()
    print(
        json.dumps(
            {k: facts[k] for k in ("train_boards", "windows", "defect_windows", "sample_seconds", "train_seconds")}
            | {"detector": str(Path(args.out) / "detector.pt")}
        )
    )
    return 0


def cmd_export_detector(args: argparse.Namespace) -> int:
    """Write the verifier's ONNX graph (and with ``--int8`` its quantised copy); print what was written as JSON."""
    import numpy as np

    from pcbsiam.data.images import load_gray
    from pcbsiam.deploy.verifier import calibration_windows, class_agreement, export_verifier, quantize_verifier
    from pcbsiam.detection.learned import detector_record, load_detector

    if args.int8 and not args.data:
        raise ConfigError("--int8 needs --data (and --split): the detector's training boards calibrate it")
    detector = load_detector(args.model)
    out = export_verifier(detector.net, args.onnx, opset=args.opset)
    report: dict[str, Any] = {"onnx": str(out), "mb": file_mb(out)}
    if args.int8:
        pairs, skipped, _ = select_boards(args.data, args.split, "all", None)
        report_skipped(skipped)
        trained = set(detector_record(args.model).get("items", ()))
        if trained:
            pairs = [p for p in pairs if p.name in trained]
            if not pairs:
                raise ConfigError(f"none of the detector's training boards is in {args.data} ({args.split})")
        chosen = [pairs[i] for i in sorted({int(i) for i in np.linspace(0, len(pairs) - 1, args.calib_boards)})]
        feeds = calibration_windows(detector, ((load_gray(p.tested), load_gray(p.template)) for p in chosen))
        int8_path = Path(args.int8_out) if args.int8_out else out.with_name(f"{out.stem}-int8{out.suffix}")
        quantize_verifier(out, int8_path, feeds)
        report["int8"] = {
            "onnx": str(int8_path),
            "mb": file_mb(int8_path),
            "calibration_boards": len(chosen),
            "calibration_windows": sum(len(f["tested"]) for f in feeds),
            "agreement": class_agreement(detector.net, int8_path, feeds),
        }
    print(json.dumps(report, indent=2))
    return 0


def _subset_options() -> argparse.ArgumentParser:
    """``--subset`` and ``--holdout-groups``: which items of ``--data`` a command uses."""
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument(
        "--subset",
        default=None,
        choices=SUBSETS,
        help="items of --data: all, or the validation (val) or training (train) items of the whole-image split "
        "training uses (10 %%, seed 0); default all, or val with --holdout-groups",
    )
    p.add_argument(
        "--holdout-groups",
        default=None,
        metavar="G1,G2",
        help="split by PCB group instead, as training with data.holdout_groups: val is these groups' items",
    )
    return p


def _fine_band_option(parser: argparse.ArgumentParser, says: str) -> None:
    """``--fine-band PX`` (0 or 1, default 0: none) on a detection command; ``says`` what it does."""
    parser.add_argument(
        "--fine-band", type=bounded(int, 0, 1), default=0, metavar="PX", help=f"{says}; default 0: none"
    )


def register(sub: argparse._SubParsersAction) -> None:
    """Add detect, evaluate-detections, train-detector and export-detector to the ``pcbsiam`` parser."""
    d = sub.add_parser(
        "detect",
        help="typed defect boxes of a pair (or a batch) in the DeepPCB benchmark's format, scored when annotated",
        parents=[
            model_option(
                "detector checkpoint (needed by --method learned); repeat it to average verifiers trained on the "
                "same candidates (e.g. other --seed)",
                required=False,
                repeat=True,
                ready=False,
            ),
            data_options(required=False, data_help=DEEPPCB_HELP, cache_dir=False),
            device_option(),
            _subset_options(),
        ],
    )
    d.add_argument("--method", default="classical", choices=DETECTORS, help="detector (default classical)")
    d.add_argument("--tested", default=None, help="tested image")
    d.add_argument("--template", default=None, help="defect-free template of the same board")
    d.add_argument(
        "--batch",
        action="store_true",
        help="detect on every pair of --data/--split (scored against its annotations) or --pairs",
    )
    d.add_argument("--pairs", default=None, help="folder of <name>_test.<ext> and <name>_temp.<ext> pairs")
    d.add_argument(
        "--views",
        type=int,
        choices=VIEW_COUNTS,
        default=1,
        help="test-time flips and turns of each candidate the learned detector averages (costs as many passes)",
    )
    d.add_argument(
        "--views-below",
        type=bounded(float, 0.0, 1.0, low_open=True),
        default=None,
        metavar="P",
        help="give the other --views only to the candidates whose first view gives every class a probability "
        "below P (0.9: about 6 %% of them on DeepPCB; the others keep the first view's verdict); default: every "
        "candidate",
    )
    _fine_band_option(
        d,
        "the learned detector also verifies the missing copper a PX-px band sees (bites shallower than the 2 px "
        "band), keeping a detection from those candidates only at confidence 0.9 or more and away from the other "
        "detections",
    )
    d.add_argument(
        "--engine",
        default="torch",
        metavar="ENGINE",
        help="what runs the learned detector's verifier: torch (default), or an ONNX graph of it written by "
        "`pcbsiam export-detector` (fp32 or int8; ONNX Runtime on the CPU)",
    )
    d.add_argument("--out", required=True, type=out_folder, help="output folder")
    d.set_defaults(func=cmd_detect)

    e = sub.add_parser(
        "evaluate-detections",
        help="score a folder of DeepPCB result files (<name>.txt) against the annotations",
        parents=[
            data_options(data_help=DEEPPCB_HELP, cache_dir=False),
            _subset_options(),
            json_option("write the figures here"),
        ],
    )
    e.add_argument(
        "--results", required=True, help="folder of <image id>.txt result files (a missing file: no detection)"
    )
    e.set_defaults(func=cmd_evaluate_detections)

    t = sub.add_parser(
        "train-detector",
        help="train the learned detector's verifier on the training items of a DeepPCB split",
        parents=[data_options(data_help=DEEPPCB_HELP, cache_dir=False), device_option()],
    )
    t.add_argument(
        "--holdout-groups",
        default=None,
        metavar="G1,G2",
        help="train on every other group (default: the training items of the whole-image split, 10 %% held out)",
    )
    t.add_argument("--backbone", default="resnet18", help="ResNet of the verifier")
    t.add_argument(
        "--input-size",
        type=bounded(int, 32, 512),
        default=64,
        metavar="PX",
        help="side of the verifier's input: every candidate window is resized to it (default 64)",
    )
    t.add_argument(
        "--window-grow",
        type=bounded(float, 1.0, 4.0),
        default=1.5,
        metavar="X",
        help="a candidate's window is X times its longer side (at least 64 px; default 1.5): the context the "
        "verifier sees around it",
    )
    t.add_argument(
        "--rule-types",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="the verifier also reads the type the classical connectivity rules give each candidate (measured "
        "better on both held-out sets of docs/RESULTS.md)",
    )
    _fine_band_option(
        t,
        "also propose the missing copper a PX-px band sees (bites shallower than the 2 px band; about 2-4 more "
        "candidates a board, which the verifier learns to drop); saved with the detector",
    )
    t.add_argument(
        "--fine-extra",
        action="store_true",
        help="with --fine-band, also propose the extra copper that band sees (spurs and shorts shallower than "
        "the 2 px band); saved with the detector",
    )
    t.add_argument("--epochs", type=bounded(int, 1, 10**6), default=6, help="passes over the candidate windows")
    t.add_argument("--batch-size", type=bounded(int, 1, 10**6), default=64, help="windows per step")
    t.add_argument("--lr", type=float, default=1e-3, help="AdamW learning rate (one-cycle schedule)")
    t.add_argument("--seed", type=int, default=0, help="random seed")
    t.add_argument("--out", required=True, type=out_folder, help="folder for detector.pt and metrics.jsonl")
    t.set_defaults(func=cmd_train_detector)

    x = sub.add_parser(
        "export-detector",
        help="write a learned detector's verifier as a checked ONNX graph (optionally int8 too) for detect --engine",
        parents=[
            model_option("detector checkpoint (or its training folder)", ready=False),
            onnx_export_options(
                data_help="DeepPCB root whose training boards calibrate the int8 graph",
                split_help="split file of --data",
            ),
        ],
    )
    x.add_argument(
        "--calib-boards",
        type=bounded(int, 1, 10**6),
        default=40,
        help="boards whose candidate windows calibrate the int8 graph, spread over the detector's training items",
    )
    x.set_defaults(func=cmd_export_detector)
