"""Inference speed benchmarks (``pcbsiam bench infer``) whose figures go into docs/RESULTS.md."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from pcbsiam.config import Config
from pcbsiam.deploy.backends import Engine
from pcbsiam.deploy.bundle import Bundle
from pcbsiam.devices import matmul_peak_gflops
from pcbsiam.models import PairModel

# --- inference speed -------------------------------------------------------------------------------

#: Side of a DeepPCB board in px; with 128 px tiles it is cut into 25 tiles.
BOARD_SIDE = 640


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
