"""Inference speed benchmarks (``pcbsiam bench infer``) whose figures go into docs/RESULTS.md."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from pcbsiam.config import Config
from pcbsiam.deploy.backends import Engine
from pcbsiam.deploy.bundle import Bundle
from pcbsiam.devices import matmul_peak_gflops
from pcbsiam.models import PairModel

if TYPE_CHECKING:
    from pcbsiam.detection.factory import Detector

# --- inference speed -------------------------------------------------------------------------------

#: Side of a DeepPCB board in px; with 128 px tiles it is cut into 25 tiles.
BOARD_SIDE = 640


def int8_peak_gops(seconds: float = 3.0, n: int = 1024, threads: int | None = None) -> float:
    """Measured int8 GEMM roof of ONNX Runtime on this CPU: best GOP/s of one (n, n) uint8 x int8 ``MatMulInteger``.

    The roof int8 graphs are measured against: with VNNI a core does several int8 multiply-adds where it
    does one in fp32, so an int8 network can pass the fp32 GEMM peak.
    """
    import tempfile

    import onnx
    from onnx import TensorProto, helper

    from pcbsiam.deploy.export import ort_session

    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["a", "b"], ["y"])],
        "int8_roof",
        [
            helper.make_tensor_value_info("a", TensorProto.UINT8, [n, n]),
            helper.make_tensor_value_info("b", TensorProto.INT8, [n, n]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.INT32, [n, n])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    with tempfile.TemporaryDirectory(prefix="pcbsiam-roof-") as tmp:
        path = Path(tmp) / "roof.onnx"
        onnx.save(model, str(path))
        session = ort_session(path, threads)
        rng = np.random.default_rng(0)
        feed = {"a": rng.integers(0, 256, (n, n), dtype=np.uint8), "b": rng.integers(-128, 128, (n, n), dtype=np.int8)}
        session.run(None, feed)
        best, t_end = float("inf"), time.perf_counter() + seconds
        while True:
            t0 = time.perf_counter()
            session.run(None, feed)
            t1 = time.perf_counter()
            best = min(best, t1 - t0)
            if t1 >= t_end:
                break
    return 2.0 * n**3 / best / 1e9


def flops_per_patch(model: PairModel, input_size: int) -> float:
    """FLOPs (2 per multiply-add, convolutions and matrix products) of one tile's work: embedding the
    (1, 1, S, S) tested patch for embedding models, scoring the pair otherwise (as ``Engine.tile_work``)."""
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.zeros(1, 1, input_size, input_size)
    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        model.encode(x) if model.embeds else model.score_pairs(x, x)
    return float(counter.get_total_flops())


def untrained_bundle(network: str | Config, preset: str = "cpu-small", threshold: float = 1.0) -> Bundle:
    """A bundle of an untrained network (speed does not depend on the weights) with ``threshold`` set.

    Args:
        network: a backbone name (then the ``preset`` config with ``model.backbone`` set) or a Config.
    """
    from pcbsiam.config import load_config
    from pcbsiam.models import create_model

    cfg = load_config(preset, [f"model.backbone={network}"]) if isinstance(network, str) else network
    torch.manual_seed(0)
    model = create_model(cfg.model).eval()
    model.threshold.fill_(threshold)
    return Bundle(model, cfg, ["untrained"], calibration={"note": "untrained network for speed benchmarks"})


def synthetic_patches(n: int, patch: int, size: int, seed: int = 0) -> np.ndarray:
    """``n`` tested-board tiles of synthetic 640 px boards (dark copper, as DeepPCB files look).

    Returns:
        (n, 1, size, size) float32, normalised as the network expects.
    """
    from pcbsiam.data.protocol import tile_grid
    from pcbsiam.data.synth import generate_pair, style_for_group
    from pcbsiam.data.transforms import crop, to_tensor

    rng = np.random.default_rng(seed)
    tiles: list[np.ndarray] = []
    k = 0
    while len(tiles) < n:
        img = 255 - generate_pair(rng, BOARD_SIDE, style=style_for_group(k % 4)).tested
        tiles += [crop(img, *map(int, t)) for t in tile_grid(BOARD_SIDE, BOARD_SIDE, patch)]
        k += 1
    return to_tensor(tiles[:n], size).numpy()


def _time_tiles(
    engine: Engine, x: np.ndarray, ref: np.ndarray, seconds: float, min_iters: int = 3, warmup: int = 2
) -> tuple[float, int]:
    """Patches/s of ``engine.tile_work`` on the (B, 1, S, S) batch ``x`` (references ``ref``), after
    ``warmup`` untimed calls (the first calls of a runtime allocate and pick kernels)."""
    for _ in range(warmup):
        engine.tile_work(x, ref)
    iters, t0 = 0, time.perf_counter()
    while True:
        engine.tile_work(x, ref)
        iters += 1
        dt = time.perf_counter() - t0
        if dt >= seconds and iters >= min_iters:
            return iters * len(x) / dt, iters


def bench_infer(
    bundle_or_cfgs: Bundle | Config | str | Sequence[Bundle | Config | str],
    engines: Sequence[str] = ("torch", "onnx-fp32", "onnx-int8"),
    batch_sizes: Sequence[int] = (1, 32),
    seconds: float = 5.0,
    workdir: str | Path | None = None,
    calibration_patches: np.ndarray | None = None,
    peak_gflops: float | None = None,
    peak_seconds: float = 3.0,
    progress: Callable[[dict], None] | None = None,
) -> list[dict]:
    """Inference speed of each network and engine: patches/s, boards/s and share of the GEMM peak.

    A patch costs one tile's work (``Engine.tile_work``): the tested tile's forward pass for embedding
    models (reference embeddings of a registered board are computed once and cached), the pair's forward
    pass otherwise; a board is a 640 px DeepPCB board, 25 tiles at 128 px. Pre-processing (decoding,
    registration, cropping) is not timed.

    Args:
        bundle_or_cfgs: a :class:`pcbsiam.deploy.bundle.Bundle`, a :class:`pcbsiam.config.Config` or a backbone
            name (an untrained ``cpu-small`` network of that backbone), or a sequence of them.
        engines: names from :data:`pcbsiam.deploy.backends.ENGINES`.
        batch_sizes: patches per call.
        seconds: timing length of each (network, engine, batch size).
        workdir: folder for the ONNX files (default: a temporary folder).
        calibration_patches: (N, 1, S, S) float32 for int8 calibration and as timing input (default:
            64 tiles of synthetic boards); used only for networks of input size S.
        peak_gflops: the fp32 GEMM peak; measured with :func:`matmul_peak_gflops` when None.
        peak_seconds: how long to measure the peak.
        progress: called with each row as it is measured.

    Returns:
        one dict per (network, engine, batch size): backbone, trained, engine, batch_size, input_size,
        patches_per_s, boards_per_s, gflop_per_patch, gflops (achieved), peak_gflops, peak_fraction,
        threads, load_avg (1-minute load average before timing, to show other work on the machine).
    """
    import os
    import tempfile

    from pcbsiam.data.protocol import tile_grid
    from pcbsiam.deploy.backends import make_engine

    items = [bundle_or_cfgs] if isinstance(bundle_or_cfgs, Bundle | Config | str) else list(bundle_or_cfgs)
    peak = peak_gflops if peak_gflops is not None else matmul_peak_gflops(peak_seconds)
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="pcbsiam-bench-") as tmp:
        work = Path(workdir) if workdir is not None else Path(tmp)
        for item in items:
            trained = isinstance(item, Bundle)
            bundle = item if isinstance(item, Bundle) else untrained_bundle(item)
            size, patch = bundle.spec.input_size, bundle.spec.patch
            patches = calibration_patches
            if patches is None or patches.shape[-1] != size:
                patches = synthetic_patches(64, patch, size)
            refs = np.roll(patches, 1, axis=0)  # speed does not depend on which reference a tile has
            flops = flops_per_patch(bundle.model, size)
            tiles_per_board = len(tile_grid(BOARD_SIDE, BOARD_SIDE, patch))
            for name in engines:
                engine = make_engine(name, bundle, work, calibration_patches=patches, calibration_references=refs)
                for bs in batch_sizes:
                    x = np.resize(patches, (bs, *patches.shape[1:]))
                    load = os.getloadavg()[0]
                    rate, _ = _time_tiles(engine, x, np.resize(refs, x.shape), seconds)
                    row = {
                        "backbone": bundle.cfg.model.backbone,
                        "trained": trained,
                        "engine": name,
                        "batch_size": int(bs),
                        "input_size": size,
                        "patches_per_s": round(rate, 2),
                        "boards_per_s": round(rate / tiles_per_board, 3),
                        "gflop_per_patch": round(flops / 1e9, 3),
                        "gflops": round(rate * flops / 1e9, 2),
                        "peak_gflops": round(peak, 1),
                        "peak_fraction": round(rate * flops / 1e9 / peak, 3),
                        "threads": torch.get_num_threads(),
                        "load_avg": round(load, 2),
                    }
                    rows.append(row)
                    if progress is not None:
                        progress(row)
                del engine
    return rows


def format_infer_table(rows: list[dict]) -> str:
    """Markdown table of :func:`bench_infer` rows."""
    head = (
        "| backbone | engine | batch | patches/s | boards/s (640 px) | GFLOP/patch | GFLOP/s "
        "| share of fp32 GEMM peak |\n"
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |\n"
    )
    body = "".join(
        f"| {r['backbone']}{'' if r['trained'] else ' (untrained)'} | {r['engine']} | {r['batch_size']} | "
        f"{r['patches_per_s']:.1f} | {r['boards_per_s']:.2f} | {r['gflop_per_patch']:.2f} | {r['gflops']:.1f} | "
        f"{100 * r['peak_fraction']:.0f} % |\n"
        for r in rows
    )
    return head + body


# --- end-to-end inspection speed ---------------------------------------------------------------------

STAGES = ("decode", "register", "crop", "gate", "network", "rest")


def bench_inspect(
    bundle: Bundle,
    root: str | Path,
    split: str | Path = "trainval.txt",
    engine: str = "torch",
    boards: int = 50,
    batch_size: int = 32,
    workdir: str | Path | None = None,
    warmup: int = 2,
    peak_seconds: float = 3.0,
    progress: Callable[[int, int], None] | None = None,
    pipeline: str = "auto",
    threads: int | None = None,
    detector: Detector | None = None,
) -> dict:
    """End-to-end inspection speed over real boards, with the classical comparison timed on the same boards.

    For each of the first ``boards`` items of the split: decode both images, register, cut the tiles
    (:class:`pcbsiam.deploy.inspector.Inspector`), score them through ``engine`` and decide. The classical
    comparison (decode, register, tolerance-band defect map, defect pixels per tile, threshold) then runs
    over the same boards in the same process.

    Args:
        bundle: a calibrated bundle of any mode.
        root: data root (DeepPCB or paper layout).
        split: split file of ``root``.
        engine: ``torch``, ``onnx-fp32`` or ``onnx-int8`` (int8 is calibrated on 64 pairs of these boards).
        boards: how many boards to time.
        batch_size: tiles per network call.
        workdir: folder for the ONNX files (default: a temporary folder).
        warmup: untimed inspections of the first board before timing.
        peak_seconds: how long to measure the fp32 GEMM peak (the roof of the network stage).
        progress: called with (boards done, boards) after each board.
        pipeline: ``on``: decode, register and crop the next board in a second thread while the network
            scores this one (:meth:`~pcbsiam.deploy.inspector.Inspector.stream`), the network on one
            thread fewer; ``off``: one stage after the other; ``auto``: as ``inspect --batch`` decides
            (:func:`~pcbsiam.deploy.inspector.pipeline_plan`). With the pipeline the stages overlap: their
            times add up to more than the wall time.
        threads: threads of the whole inspection (default ``torch.get_num_threads()``).
        detector: also find typed defect boxes on every board (a ``detect`` stage; the classical comparison
            stays the tile comparison).

    Returns:
        boards, engine, model boards/s and classical boards/s (decoding included), their ratio, the share
        of time per stage, the network stage's GFLOP/s and share of the measured fp32 peak, threads,
        1-minute load average before timing.
    """
    import os
    import tempfile

    from pcbsiam.data.images import load_gray
    from pcbsiam.data.protocol import tile_grid
    from pcbsiam.data.sources import read_boards
    from pcbsiam.deploy.backends import make_engine
    from pcbsiam.deploy.export import data_patches
    from pcbsiam.deploy.inspector import Inspector, pipeline_plan
    from pcbsiam.errors import PcbsiamError
    from pcbsiam.evaluation.baseline import ClassicalComparator, tile_scores

    pairs = read_boards(root, split).pairs[:boards]
    if not pairs:
        raise PcbsiamError(f"no readable board in {root} ({split}) to time")
    spec = bundle.spec
    pipelined, net_threads = pipeline_plan(pipeline, engine, threads or torch.get_num_threads())
    all_threads = torch.get_num_threads()
    with tempfile.TemporaryDirectory(prefix="pcbsiam-bench-") as tmp:
        calib = data_patches(bundle, root, split, n=64) if engine == "onnx-int8" else (None, None)
        torch.set_num_threads(net_threads)
        backend = make_engine(engine, bundle, workdir or tmp, calib[0], net_threads, calib[1])
        inspector = Inspector(
            bundle, batch_size=batch_size, engine=None if engine == "torch" else backend, detector=detector
        )
        first = (load_gray(pairs[0].tested), load_gray(pairs[0].template))
        for _ in range(warmup):
            inspector.inspect(*first)
        load = os.getloadavg()[0]
        stages = dict.fromkeys(STAGES + (("detect",) if detector is not None else ()), 0.0)
        tiles = scored = 0
        t_start = time.perf_counter()
        results = inspector.stream(pairs, lambda p: (load_gray(p.tested), load_gray(p.template)), pipelined)
        for k, (pair, result) in enumerate(results):
            if isinstance(result, Exception):
                raise PcbsiamError(f"{pair.name}: {result}")
            for name, sec in result.timings.items():
                stages[name] += sec
            tiles += len(result.tiles)
            scored += result.scored_tiles
            if progress is not None:
                progress(k + 1, len(pairs))
        model_seconds = time.perf_counter() - t_start
        torch.set_num_threads(all_threads)
        comparator = ClassicalComparator(allow_unregistered=True)
        t_start = time.perf_counter()
        for pair in pairs:
            tested, template = load_gray(pair.tested), load_gray(pair.template)
            dmap, _ = comparator.score_board(tested, template)
            _ = tile_scores(dmap, tile_grid(*tested.shape, spec.patch)) > 0
        classical_seconds = time.perf_counter() - t_start
    flops = flops_per_patch(bundle.model, spec.input_size)
    net_gflops = scored * flops / max(stages["network"], 1e-9) / 1e9
    peak = matmul_peak_gflops(peak_seconds)
    total = sum(stages.values())
    roof = {}
    if engine == "onnx-int8":
        int8_peak = int8_peak_gops(peak_seconds)
        roof = {"int8_peak_gops": round(int8_peak, 1), "network_share_of_int8_peak": round(net_gflops / int8_peak, 3)}
    return {
        "boards": len(pairs),
        "tiles": tiles,
        "scored_tiles": scored,
        "gate": bundle.cfg.model.gate,
        "views": bundle.cfg.model.views,
        "detector": None if detector is None else type(detector).__name__,
        "engine": engine,
        "pipeline": pipelined,
        "mode": bundle.cfg.model.mode,
        "backbone": bundle.cfg.model.backbone,
        "input_size": spec.input_size,
        "boards_per_s": round(len(pairs) / model_seconds, 3),
        "classical_boards_per_s": round(len(pairs) / classical_seconds, 3),
        "ratio_to_classical": round(classical_seconds / model_seconds, 3),
        "stage_share": {k: round(v / total, 3) for k, v in stages.items()},
        "stage_ms_per_board": {k: round(1000 * v / len(pairs), 1) for k, v in stages.items()},
        "network_gflops": round(net_gflops, 1),
        "peak_gflops": round(peak, 1),
        "network_share_of_peak": round(net_gflops / peak, 3),
        **roof,
        "threads": all_threads,
        "network_threads": net_threads,
        "load_avg": round(load, 2),
    }
