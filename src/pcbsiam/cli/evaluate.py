"""Sub-commands calibrate, evaluate, baseline and inspect: parse, call the library, print."""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from pcbsiam.cli.common import (
    data_options,
    detector_engine_option,
    device_option,
    engine_options,
    flag_detections_option,
    inference_of,
    inference_options,
    json_option,
    model_option,
    out_file,
    out_folder,
    out_folder_or,
    progress_bar,
    single_output,
    tiling_options,
    write_json_if,
)
from pcbsiam.errors import ConfigError, PcbsiamError
from pcbsiam.ready import ready_name, resolve_model

if TYPE_CHECKING:
    import numpy as np

    from pcbsiam.deploy.inspector import Inspector


def cmd_calibrate(args: argparse.Namespace) -> int:
    from pcbsiam.data.images import load_gray
    from pcbsiam.evaluation.calibration import parse_policy
    from pcbsiam.evaluation.evaluate import calibrate_model

    parse_policy(args.policy)  # a sentence before anything is loaded
    out = single_output(args.bundle, args.out, "model.bundle", "bundle")
    if out is None and ready_name(resolve_model(args.model)):
        raise ConfigError(
            f"--model {args.model} is a ready model inside the package: give --bundle FILE (or --out DIR) for the "
            "new bundle"
        )
    data_args = (args.data, args.max_patches is not None, args.subset != "auto", args.split != "trainval.txt")
    if args.from_cv and (any(data_args) or args.cache_dir):
        raise ConfigError(
            "--from-cv takes the threshold from the folds' held-out scores: drop --data, --split, --subset, "
            "--max-patches and --cache-dir"
        )
    if not args.from_cv and not args.data:
        raise ConfigError("give --data ROOT (the boards to calibrate on) or --from-cv DIR (a finished pcbsiam cv)")
    boards = {}
    for item in args.board or []:
        name, _, path = item.partition("=")
        if not path:
            raise PcbsiamError(f"--board {item!r} must look like NAME=IMAGE")
        boards[name] = load_gray(path)
    if args.from_cv:
        from pcbsiam.experiment.cv import calibrate_from_cv

        bundle = calibrate_from_cv(args.model, args.from_cv, args.policy, args.device, inference_of(args))
        bundle.boards.update(boards)
    else:
        bundle = calibrate_model(
            args.model,
            args.data,
            args.split,
            args.policy,
            args.subset,
            args.max_patches,
            args.cache_dir,
            args.device,
            boards,
            inference_of(args),
        )
    if out is None:
        out = Path(args.model) / "model.bundle" if Path(args.model).is_dir() else Path(args.model)
    bundle.save(out, half=args.half)
    cal = bundle.calibration
    print(
        json.dumps(
            {
                "bundle": str(out),
                "policy": args.policy,
                "threshold": round(cal["threshold"], 6),
                "value": round(cal["value"], 6),
                "subset": cal.get("subset", "held-out scores of the folds"),
                "source": cal["source"],
                "patches": cal["patches"],
                "boards": sorted(bundle.boards),
            }
        )
    )
    return 0


def _plots(out_dir: Path, scores_by_name: dict[str, tuple[np.ndarray, np.ndarray, float]], xlabel: str) -> list[str]:
    from pcbsiam.viz.plots import plot_distance_histograms, plot_roc

    written = []
    for name, (s, y, thr) in scores_by_name.items():
        safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in name)
        label = "defect pixels" if name == "classical" else xlabel
        written.append(str(plot_distance_histograms(s, y, thr, out_dir / f"hist_{safe}.png", title=name, xlabel=label)))
    written.append(str(plot_roc({n: (s, y) for n, (s, y, _) in scores_by_name.items()}, out_dir / "roc.png")))
    return written


def cmd_evaluate(args: argparse.Namespace) -> int:
    from pcbsiam.evaluation.evaluate import evaluate_models, format_table
    from pcbsiam.evaluation.metrics import format_mean_std

    result, curves = evaluate_models(
        args.model,
        args.data,
        args.split,
        args.subset,
        args.max_patches,
        args.baseline,
        args.cache_dir,
        args.device,
        engines=args.engines.split(",") if args.engines else None,
        inference=inference_of(args),
    )
    print(format_table(result["models"]))
    for name, rep in result["models"].items():
        for note in rep.get("notes", []):
            print(f"note ({name}): {note}", file=sys.stderr)
    if "mean_std" in result:
        n = len(args.model)
        print(
            f"\nover {n} models: "
            + ", ".join(f"{k} {format_mean_std(v['mean'], v['std'])}" for k, v in result["mean_std"].items())
        )
    if args.out:
        from pcbsiam.deploy.bundle import load_bundle

        label = load_bundle(args.model[0]).model.score_label  # several bundles: the first's
        result["plots"] = _plots(Path(args.out), curves, label)
        print("plots: " + ", ".join(result["plots"]), file=sys.stderr)
    write_json_if(args.json or (Path(args.out) / "evaluation.json" if args.out else None), result, announce=True)
    return 0


def cmd_baseline(args: argparse.Namespace) -> int:
    from pcbsiam.data.crops import PatchSpec
    from pcbsiam.evaluation.baseline import ClassicalComparator
    from pcbsiam.evaluation.calibration import parse_policy
    from pcbsiam.evaluation.evaluate import (
        calibrate_scores,
        classical_scorer,
        format_table,
        load_subset,
        report,
        run_val_items,
    )

    parse_policy(args.policy)  # a sentence before anything is loaded
    val_items = run_val_items(args.model) if args.model else None
    comp = (
        ClassicalComparator(k=3, neighbourhood="square", open_size=0, allow_unregistered=True)
        if args.plain
        else ClassicalComparator(
            k=args.k, neighbourhood=args.neighbourhood, open_size=args.open_size, allow_unregistered=True
        )
    )
    scorer = classical_scorer(comp)
    spec = PatchSpec(patch=args.patch)
    train = load_subset(args.data, args.split, "train", val_items, spec, cache_dir=args.cache_dir)
    val = load_subset(args.data, args.split, "val", val_items, spec, cache_dir=args.cache_dir)
    cal = calibrate_scores(scorer(train.store, train.index), train.index.labels, args.policy)
    s = scorer(val.store, val.index)
    rep = report(s, val.index, cal.threshold) | {
        "method": repr(comp),
        "policy": args.policy,
        "train_patches": len(train.index),
    }
    print(format_table({"classical": rep}))
    if args.out:
        rep["plots"] = _plots(Path(args.out), {"classical": (s, val.index.labels, cal.threshold)}, "defect pixels")
    write_json_if(args.json or (Path(args.out) / "baseline.json" if args.out else None), rep, announce=True)
    return 0


def _pairs_in_folder(folder: Path) -> list[tuple[str, Path, Path]]:
    out = []
    for test in sorted(folder.iterdir()):
        stem = test.stem
        if stem.endswith("_test"):
            cands = list(folder.glob(f"{stem[:-5]}_temp.*"))
            if cands:
                out.append((stem[:-5], test, cands[0]))
    if not out:
        raise PcbsiamError(f"no <name>_test.<ext> / <name>_temp.<ext> pairs in {folder}")
    return out


def cmd_inspect(args: argparse.Namespace) -> int:
    import torch

    from pcbsiam.data.deeppcb import annotation_of, parse_annotation
    from pcbsiam.data.images import load_gray
    from pcbsiam.deploy.backends import engine_for, engine_kind
    from pcbsiam.deploy.bundle import load_bundle
    from pcbsiam.deploy.inspector import Inspector, make_inspection_detector, pipeline_plan
    from pcbsiam.io import write_json
    from pcbsiam.viz.overlay import render_overlay

    # a sentence before the bundle loads
    detector = make_inspection_detector(args.detector, args.device, args.detector_engine)
    kind = engine_kind(args.engine)
    pipelined, threads = pipeline_plan(
        args.pipeline if args.batch else "off", kind, args.threads or torch.get_num_threads()
    )
    torch.set_num_threads(threads)
    bundle = load_bundle(args.model, args.device, inference_of(args))
    inspector = Inspector(
        bundle,
        args.device,
        overlap=args.overlap,
        max_shift=args.max_shift,
        engine=engine_for(args.engine, bundle, threads),
        detector=detector,
        flag_detections=args.flag_detections,
    )
    out = Path(args.out)
    if not args.batch:
        if not args.tested or not (args.template or args.board):
            raise PcbsiamError("give --tested IMG and --template IMG (or --board NAME), or --batch with --data/--pairs")
        tested = load_gray(args.tested)
        annotation = annotation_of(args.tested)  # a tested image in the DeepPCB layout: its boxes are drawn
        truth = None if annotation is None else parse_annotation(annotation)
        result = inspector.inspect(tested, args.board or load_gray(args.template))
        rep = result.to_dict() | {"tested": str(args.tested), "reference": args.board or str(args.template)}
        if annotation is not None:
            rep["annotation"] = str(annotation)
        write_json(out / "report.json", rep)
        render_overlay(tested, result, out / "overlay.png", truth=truth)
        found = {"detections": len(result.detections)} if detector is not None else {}
        print(
            json.dumps(
                {
                    "verdict": rep["verdict"],
                    "max_score": round(rep["max_score"], 4),
                    "defective_tiles": rep["defective_tiles"],
                    "shift": rep["shift"],
                }
                | found
                | {"report": str(out / "report.json"), "overlay": str(out / "overlay.png")}
            )
        )
        return 0
    return _inspect_batch(args, inspector, out, pipelined)


def _inspect_batch(args: argparse.Namespace, inspector: Inspector, out: Path, pipeline: bool) -> int:
    """Inspect every pair of ``--pairs`` or ``--data/--split``; write verdicts.csv and summary.json, and
    with a detector ``OUT/results/<name>.txt`` (DeepPCB result files), scored in summary.json when annotated."""
    import numpy as np

    from pcbsiam.data.deeppcb import read_detections, write_detections
    from pcbsiam.data.images import load_gray
    from pcbsiam.data.sources import no_readable_items, read_boards
    from pcbsiam.io import write_json, write_text

    if args.pairs:
        items = [(name, t, r, None) for name, t, r in _pairs_in_folder(Path(args.pairs))]
        skipped: list[str] = []
        where, source = args.pairs, "the folder"
    elif args.data:
        boards = read_boards(args.data, args.split)
        items = [(p.name, p.tested, p.template, p.boxes) for p in boards.pairs]
        skipped = [str(e) for e in boards.skipped]
        where, source = args.data, f"the split {args.split}"
    else:
        raise PcbsiamError("--batch needs --data ROOT [--split FILE] or --pairs DIR")
    rows, caught, boxes_total, correct, labelled, clean = [], 0, 0, 0, 0, 0
    detecting = inspector.detector is not None
    found: dict[str, np.ndarray] = {}

    def load(item: tuple) -> tuple[np.ndarray, np.ndarray]:
        return load_gray(item[1]), load_gray(item[2])

    with progress_bar(len(items), "inspect") as bar:
        # the next pair is decoded, registered and cropped in a second thread while this one runs the network
        for (name, _, _, boxes), res in inspector.stream(items, load, pipeline):
            bar.update()
            if isinstance(res, PcbsiamError):
                skipped.append(f"{name}: {res}")
                continue
            rows.append(
                {
                    "name": name,
                    "verdict": "defective" if res.defective else "pass",
                    "max_score": round(res.max_score, 6),
                    "defective_tiles": sum(t.defective for t in res.tiles),
                    "tiles": len(res.tiles),
                    "dy": res.shift["dy"],
                    "dx": res.shift["dx"],
                }
                | ({"detections": len(res.detections)} if detecting else {})
            )
            if detecting:
                # scored as written: the benchmark reads integer corners
                found[name] = read_detections(write_detections(out / "results", name, res.detection_rows()))
            if boxes is not None:
                labelled += 1
                clean += int(len(boxes) == 0)
                correct += int(res.defective == (len(boxes) > 0))
                boxes_total += len(boxes)
                caught += int(res.flags(boxes).sum())
    if not rows:  # nothing inspected: refuse rather than report an empty batch
        raise no_readable_items(where, source, skipped)
    buf = io.StringIO()
    if rows:
        w = csv.DictWriter(buf, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    write_text(out / "verdicts.csv", buf.getvalue())
    summary = {
        "boards": len(rows),
        "defective": sum(r["verdict"] == "defective" for r in rows),
        "pass": sum(r["verdict"] == "pass" for r in rows),
        "skipped": skipped,
        "threshold": inspector.bundle.threshold,
    }
    if labelled:
        summary["board_accuracy"] = correct / labelled
        summary["defects_annotated"] = boxes_total
        summary["defects_flagged_share"] = caught / boxes_total if boxes_total else None
        if not clean:  # DeepPCB: every tested board has defects, so flagging everything scores 1.0
            summary["note"] = (
                "every annotated board here has defects: board_accuracy only says how many were flagged "
                "(flagging everything scores 1.0); read defects_flagged_share, the share of annotated defects "
                "inside a flagged tile"
            )
    shown = {}
    if detecting:
        summary["detections"] = sum(len(f) for f in found.values())
        summary["results"] = str(out / "results")
        annotated = [(name, boxes) for name, _, _, boxes in items if boxes is not None]
        if annotated:
            from pcbsiam.evaluation.detection import evaluate_detections

            # the DeepPCB protocol over the annotated pairs; one that could not be inspected counts as no detection
            report = evaluate_detections((name, b, found.get(name, np.zeros((0, 6)))) for name, b in annotated)
            summary["detection"] = report.to_dict()
            shown = {
                "detection": {k: round(summary["detection"][k], 4) for k in ("precision", "recall", "f_score", "ap")}
            }
    write_json(out / "summary.json", summary)
    print(
        json.dumps(
            {k: v for k, v in summary.items() if k not in ("skipped", "detection")}
            | shown
            | {"skipped": len(skipped), "csv": str(out / "verdicts.csv")}
        )
    )
    for s in skipped:
        print(f"skipped: {s}", file=sys.stderr)
    return 0


def _subset_options(subset_help: str, max_patches_help: str | None = None) -> argparse.ArgumentParser:
    """``--subset`` (auto, train, val, all) and ``--max-patches`` of calibrate and evaluate."""
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--subset", default="auto", choices=["auto", "train", "val", "all"], help=subset_help)
    p.add_argument("--max-patches", type=int, default=None, help=max_patches_help)
    return p


def _policy_option() -> argparse.ArgumentParser:
    """``--policy``: the operating point the threshold is chosen for."""
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--policy", default="accuracy", help="accuracy (paper), balanced_accuracy, f1, recall:0.995")
    return p


def register(sub: argparse._SubParsersAction) -> None:
    """Add calibrate, evaluate, baseline and inspect to the ``pcbsiam`` parser."""
    c = sub.add_parser(
        "calibrate",
        help="choose the threshold and write a model bundle",
        parents=[
            model_option("training run folder, checkpoint or bundle"),
            data_options(required=False, data_help="data root whose patches the threshold is chosen on"),
            device_option(),
            inference_options(),
            _policy_option(),
            _subset_options(
                "items to calibrate on (auto: the run's training items, else all)",
                "calibrate on at most this many patches",
            ),
        ],
    )
    c.add_argument(
        "--from-cv",
        default=None,
        metavar="DIR",
        help="choose the threshold on the held-out scores of a finished `pcbsiam cv` of the model's config instead "
        "of on training patches (no --data; standard boards only by --board): unseen designs score closer to the "
        "boundary than trained ones",
    )
    c.add_argument("--board", action="append", metavar="NAME=IMAGE", help="register a standard board")
    c.add_argument("--out", default=None, type=out_folder_or(".bundle"), help="folder for model.bundle")
    c.add_argument(
        "--bundle", default=None, type=out_file, help="bundle file (default: RUN/model.bundle or the bundle itself)"
    )
    c.add_argument(
        "--half",
        action="store_true",
        help="store the weights as float16 (half the file, e.g. to ship it; loaded back as float32)",
    )
    c.set_defaults(func=cmd_calibrate)

    e = sub.add_parser(
        "evaluate",
        help="metrics, per-type recall, histograms and ROC of one or more models",
        parents=[
            model_option("bundle (repeat for several runs: mean ± std)", repeat=True),
            data_options(),
            device_option(),
            inference_options(),
            _subset_options("items to evaluate (auto: the run's validation items, else all)"),
            json_option("write the figures here"),
        ],
    )
    e.add_argument("--baseline", action="store_true", help="also the classical comparison on the same patches")
    e.add_argument("--engines", default=None, help="also score through engines: onnx-fp32,onnx-int8 (every mode)")
    e.add_argument("--out", default=None, type=out_folder, help="folder for plots (and evaluation.json)")
    e.set_defaults(func=cmd_evaluate)

    b = sub.add_parser(
        "baseline",
        help="classical template comparison, calibrated and evaluated the same way",
        parents=[
            data_options(),  # no --device: the classical comparison runs in NumPy
            model_option("a run folder whose train/validation split to use", required=False, ready=False),
            _policy_option(),
            json_option("write the figures here"),
        ],
    )
    b.add_argument("--patch", type=int, default=128, help="protocol patch side (px)")
    b.add_argument("--k", type=int, default=2, help="tolerance band in px")
    b.add_argument("--neighbourhood", default="disk", choices=["disk", "square"], help="shape of the band")
    b.add_argument("--open-size", type=int, default=3, help="opening of the defect map (0: none)")
    b.add_argument("--plain", action="store_true", help="the textbook variant: k=3, square band, no opening")
    b.add_argument("--out", default=None, type=out_folder, help="folder for plots (and baseline.json)")
    b.set_defaults(func=cmd_baseline)

    i = sub.add_parser(
        "inspect",
        help="inspect a whole board (or a batch) and draw the verdict",
        parents=[
            model_option("bundle (or a run folder with a validated threshold)"),
            data_options(required=False, cache_dir=False),  # boards are read once: nothing to memory-map
            device_option(),
            tiling_options(),
            inference_options(),
            engine_options(),
        ],
    )
    i.add_argument("--tested", default=None, help="tested image")
    # the name before the CLI said --tested everywhere (as the API and serve-loadtest do); hidden, still accepted
    i.add_argument("--test", dest="tested", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    i.add_argument("--template", default=None, help="defect-free reference image")
    i.add_argument("--board", default=None, help="name of a standard board registered in the bundle")
    i.add_argument("--batch", action="store_true", help="inspect every pair of --data/--split or --pairs")
    i.add_argument("--pairs", default=None, help="folder of <name>_test.<ext> and <name>_temp.<ext> pairs")
    i.add_argument(
        "--detector",
        default=None,
        metavar="{classical,PATH}",
        help="also find typed defect boxes: 'classical', or a detector file of `pcbsiam train-detector` "
        "(default: none); the tile verdicts do not change unless --flag-detections",
    )
    detector_engine_option(i)
    flag_detections_option(i)
    i.add_argument("--out", required=True, type=out_folder, help="output folder")
    i.set_defaults(func=cmd_inspect)
