"""Training-side benchmarks (``pcbsiam bench train``, ``pcbsiam data bench``) whose figures go into docs/RESULTS.md."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from pcbsiam.config import load_config
from pcbsiam.data.crops import PatchSpec
from pcbsiam.data.datasets import TripletDataset
from pcbsiam.data.sampler import sample_triplets
from pcbsiam.data.sources import patches_of, read_boards
from pcbsiam.data.store import load_store
from pcbsiam.devices import matmul_peak_gflops
from pcbsiam.models import build_model
from pcbsiam.train.loops import make_optimizer, train_step
from pcbsiam.train.objectives import objective_for


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
    ds = TripletDataset(store, index, trip, PatchSpec(input_size=size), augment=True)
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


def bench_train(
    backbones: list[str],
    modes: Sequence[str] = ("paper",),
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
            objective = objective_for(cfg)
            crit = objective.loss(cfg.train)
            opt = make_optimizer(model.parameters(), "adam", 1e-4, 0.0)
            batch = objective.synthetic_batch(input_size, batch_size)
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
