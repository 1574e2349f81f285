"""Benchmarks whose figures go into docs/RESULTS.md."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from pcbsiam.bundle import Bundle
from pcbsiam.config import Config
from pcbsiam.data.sampler import sample_triplets
from pcbsiam.data.sources import patches_of, read_boards
from pcbsiam.data.store import load_store
from pcbsiam.data.torchdata import TripletDataset
from pcbsiam.engines import Engine


def bench_loader(
    root: str | Path,
    split: str = "trainval.txt",
    size: int = 128,
    batch_size: int = 64,
    workers: int = 0,
    seconds: float = 10.0,
    cache_dir: str | None = None,
) -> dict:
    """Patches/s delivered by the training loader (triplet batches, augmentation on).

    Returns:
        decode seconds (or memory-map seconds with a warm cache), patches/s, batches timed.
    """
    t0 = time.perf_counter()
    store = load_store(read_boards(root, split), cache_dir=cache_dir)
    index = patches_of(store)
    load_s = time.perf_counter() - t0
    trip = sample_triplets(index.labels, index.group_ids, 20000, seed=0)
    ds = TripletDataset(store, index, trip, size, augment=True)
    loader = DataLoader(ds, batch_size=batch_size, shuffle=True, num_workers=workers)
    n, t1 = 0, time.perf_counter()
    batches = 0
    for images, _, _ in loader:
        n += images.shape[0] * images.shape[1]
        batches += 1
        if time.perf_counter() - t1 > seconds:
            break
    dt = time.perf_counter() - t1
    return {
        "boards": len(store),
        "patches": len(index),
        "load_seconds": round(load_s, 2),
        "patches_per_s": round(n / dt, 1),
        "batches": batches,
        "batch_size": batch_size,
        "workers": workers,
        "input_size": size,
        "torch_threads": torch.get_num_threads(),
        "rss_note": "boards kept as uint8",
        "dtype": str(np.uint8),
    }


# --- inference speed -------------------------------------------------------------------------------

#: Side of a DeepPCB board in px; with 128 px tiles it is cut into 25 tiles.
BOARD_SIDE = 640


def matmul_peak_gflops(seconds: float = 3.0, n: int = 1024) -> float:
    """Measured fp32 GEMM peak of this machine: best GFLOP/s of ``torch.mm`` on (n, n) matrices.

    Runs on the CPU with ``torch.get_num_threads()`` threads for about ``seconds``; the best of many
    timed products is returned, so a briefly busy machine lowers it less than an average would.
    """
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(n, n, generator=gen), torch.randn(n, n, generator=gen)
    out = torch.empty(n, n)
    torch.mm(a, b, out=out)
    best, t_end = float("inf"), time.perf_counter() + seconds
    while True:
        t0 = time.perf_counter()
        torch.mm(a, b, out=out)
        t1 = time.perf_counter()
        best = min(best, t1 - t0)
        if t1 >= t_end:
            break
    return 2.0 * n**3 / best / 1e9


def flops_per_patch(model: torch.nn.Module, input_size: int) -> float:
    """FLOPs (2 per multiply-add, convolutions and matrix products) of embedding one (1, 1, S, S) patch."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        model.embed(torch.zeros(1, 1, input_size, input_size))
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
    from pcbsiam.data.synth import generate_pair, style_for_group
    from pcbsiam.data.transforms import crop, to_tensor
    from pcbsiam.inference import tile_grid

    rng = np.random.default_rng(seed)
    tiles: list[np.ndarray] = []
    k = 0
    while len(tiles) < n:
        img = 255 - generate_pair(rng, BOARD_SIDE, style=style_for_group(k % 4)).tested
        tiles += [crop(img, *map(int, t)) for t in tile_grid(BOARD_SIDE, BOARD_SIDE, patch)]
        k += 1
    return to_tensor(tiles[:n], size).numpy()


def _time_embed(engine: Engine, x: np.ndarray, seconds: float, min_iters: int = 3) -> tuple[float, int]:
    """Patches/s of ``engine.embed`` on the (B, 1, S, S) batch ``x``, after one warm-up call."""
    engine.embed(x)
    iters, t0 = 0, time.perf_counter()
    while True:
        engine.embed(x)
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

    A patch costs one forward pass of the tested tile (reference embeddings of a registered board are
    computed once and cached); a board is a 640 px DeepPCB board, 25 tiles at 128 px. Pre-processing
    (decoding, registration, cropping) is not timed.

    Args:
        bundle_or_cfgs: a :class:`pcbsiam.bundle.Bundle`, a :class:`pcbsiam.config.Config` or a backbone
            name (an untrained ``cpu-small`` network of that backbone), or a sequence of them.
        engines: names from :data:`pcbsiam.engines.ENGINES`.
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

    from pcbsiam.engines import make_engine
    from pcbsiam.inference import tile_grid

    items = [bundle_or_cfgs] if isinstance(bundle_or_cfgs, Bundle | Config | str) else list(bundle_or_cfgs)
    peak = peak_gflops if peak_gflops is not None else matmul_peak_gflops(peak_seconds)
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="pcbsiam-bench-") as tmp:
        work = Path(workdir) if workdir is not None else Path(tmp)
        for item in items:
            trained = isinstance(item, Bundle)
            bundle = item if isinstance(item, Bundle) else untrained_bundle(item)
            size, patch = bundle.cfg.model.input_size, bundle.cfg.data.patch
            patches = calibration_patches
            if patches is None or patches.shape[-1] != size:
                patches = synthetic_patches(64, patch, size)
            flops = flops_per_patch(bundle.model, size)
            tiles_per_board = len(tile_grid(BOARD_SIDE, BOARD_SIDE, patch))
            for name in engines:
                engine = make_engine(name, bundle, work, calibration_patches=patches)
                for bs in batch_sizes:
                    x = np.resize(patches, (bs, *patches.shape[1:]))
                    load = os.getloadavg()[0]
                    rate, _ = _time_embed(engine, x, seconds)
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


def _train_batch(cfg: Config, batch_size: int) -> tuple:
    """A synthetic training batch of the layout ``cfg.model.mode`` trains on."""
    s = cfg.model.input_size
    gen = torch.Generator().manual_seed(0)
    if cfg.model.mode != "paper":
        return (
            torch.randn(batch_size, 1, s, s, generator=gen),
            torch.randn(batch_size, 1, s, s, generator=gen),
            torch.arange(batch_size) % 2,
        )
    labels = torch.tensor([[1, 1, 0], [0, 1, 0]]).repeat(batch_size // 2 + 1, 1)[:batch_size]
    return torch.randn(batch_size, 3, 1, s, s, generator=gen), labels, torch.zeros(batch_size, 3, dtype=torch.long)


def bench_train(
    backbones: list[str],
    modes: list[str] = ("paper",),
    input_size: int = 128,
    batch_size: int = 16,
    seconds: float = 20.0,
    preset: str = "cpu-small",
    peak_gflops: float | None = None,
) -> list[dict]:
    """Training throughput per backbone: items/s (triplets or pairs) and share of the fp32 GEMM peak.

    FLOPs of one optimisation step (forward and backward) are counted with ``FlopCounterMode``;
    the share of peak is FLOPs per step / seconds per step / measured GEMM peak.
    """
    from torch.utils.flop_counter import FlopCounterMode

    from pcbsiam.config import load_config
    from pcbsiam.engine import make_optimizer, train_step
    from pcbsiam.losses import PairLoss, SiameseLoss
    from pcbsiam.models import build_model

    peak = peak_gflops or matmul_peak_gflops()
    rows = []
    for mode in modes:
        for name in backbones:
            cfg = load_config(
                preset, [f"model.backbone={name}", f"model.mode={mode}", f"model.input_size={input_size}"]
            )
            cfg.model.num_classes = 7
            torch.manual_seed(0)
            model = build_model(cfg.model)
            crit = SiameseLoss(cfg.train.loss, cfg.train.margin) if mode == "paper" else PairLoss()
            opt = make_optimizer(model.parameters(), "adam", 1e-4, 0.0)
            batch = _train_batch(cfg, batch_size)
            dev = torch.device("cpu")
            counter = FlopCounterMode(display=False)
            with counter:
                train_step(model, crit, opt, batch, dev, amp=False)
            flops = float(counter.get_total_flops())
            train_step(model, crit, opt, batch, dev, amp=False)  # warm-up
            times, t_end = [], time.perf_counter() + seconds
            while time.perf_counter() < t_end or len(times) < 3:
                times.append(train_step(model, crit, opt, batch, dev, amp=False).seconds)
            step = float(np.median(times))
            rows.append(
                {
                    "mode": mode,
                    "backbone": name,
                    "input_size": input_size,
                    "batch_size": batch_size,
                    "items_per_s": round(batch_size / step, 2),
                    "seconds_per_step": round(step, 3),
                    "gflop_per_step": round(flops / 1e9, 1),
                    "gflops": round(flops / step / 1e9, 1),
                    "peak_gflops": round(peak, 1),
                    "share_of_peak": round(flops / step / 1e9 / peak, 3),
                    "steps_timed": len(times),
                    "threads": torch.get_num_threads(),
                }
            )
    return rows


def format_train_table(rows: list[dict]) -> str:
    """Markdown table of :func:`bench_train` rows."""
    head = (
        "| mode | backbone | items/s | s/step (batch) | GFLOP/step | GFLOP/s | share of fp32 GEMM peak |\n"
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |\n"
    )
    body = "".join(
        f"| {r['mode']} | {r['backbone']} | {r['items_per_s']} | {r['seconds_per_step']} ({r['batch_size']}) | "
        f"{r['gflop_per_step']} | {r['gflops']} | {r['share_of_peak']:.0%} |\n"
        for r in rows
    )
    return head + body
