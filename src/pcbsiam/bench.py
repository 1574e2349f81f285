"""Benchmarks whose figures go into docs/RESULTS.md."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from pcbsiam.data.sampler import sample_triplets
from pcbsiam.data.sources import patches_of, read_boards
from pcbsiam.data.store import load_store
from pcbsiam.data.torchdata import TripletDataset


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
