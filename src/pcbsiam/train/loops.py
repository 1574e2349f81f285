"""Training and evaluation loops as plain functions (in the manner of torchvision's references)."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from pcbsiam.devices import autocast

log = logging.getLogger(__name__)


@dataclass
class StepStats:
    """What one optimisation step reports."""

    loss: float
    parts: dict[str, float]
    items: int
    seconds: float


def train_step(
    model: nn.Module,
    criterion: nn.Module,
    optimizer: torch.optim.Optimizer,
    batch: tuple,
    device: torch.device,
    amp: bool = True,
    cpu_amp: bool = False,
) -> StepStats:
    """One optimisation step; ``criterion.batch_loss(model, batch, device)`` knows the batch layout
    of its objective (triplets or pairs, :mod:`pcbsiam.train.objectives`). The forward pass runs in
    bfloat16 autocast with ``amp`` on CUDA, and on the CPU with ``cpu_amp`` too."""
    t0 = time.perf_counter()
    with autocast(device, amp, cpu=cpu_amp):
        parts, n = criterion.batch_loss(model, batch, device)
    optimizer.zero_grad(set_to_none=True)
    parts.total.backward()
    optimizer.step()
    named = {k: v.item() for k, v in parts.parts.items()}
    return StepStats(parts.total.item(), named, n, time.perf_counter() - t0)


def train_one_epoch(
    model: nn.Module,
    criterion: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None,
    loader: DataLoader,
    device: torch.device,
    epoch: int,
    start_step: int = 0,
    amp: bool = True,
    on_step: Callable[[int, int, StepStats], None] | None = None,
    cpu_amp: bool = False,
) -> float:
    """Train over one epoch's batches (triplets or pairs).

    Args:
        loader: yields this epoch's batches from step ``start_step`` on (a resumed epoch starts late).
        on_step: called after each step with (epoch, step within the epoch, its stats); checkpoints
            and logging live there.
        amp, cpu_amp: bfloat16 autocast of the forward passes on CUDA, and on the CPU too (:func:`train_step`).

    Returns:
        Mean loss of the steps run.
    """
    model.train()
    losses = []
    for step, batch in enumerate(loader, start=start_step):
        stats = train_step(model, criterion, optimizer, batch, device, amp, cpu_amp)
        if not math.isfinite(stats.loss):
            raise FloatingPointError(f"loss became {stats.loss} at epoch {epoch} step {step}; lower train.lr")
        if scheduler is not None:
            scheduler.step()
        losses.append(stats.loss)
        if on_step is not None:
            on_step(epoch, step, stats)
    return float(np.mean(losses)) if losses else float("nan")


def cosine_schedule(
    optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int = 0
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up, then cosine decay to zero over ``total_steps``."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def make_optimizer(params, name: str, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """``adam``, ``adamw`` or ``sgd`` (momentum 0.9)."""
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name!r}; choose adam, adamw or sgd")
