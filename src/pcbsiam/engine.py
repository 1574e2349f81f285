"""Training and evaluation loops as plain functions (in the manner of torchvision's references)."""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

log = logging.getLogger(__name__)


@dataclass
class PairScores:
    """Distances of patches to their references, with what is known of each patch.

    Attributes:
        distances: (N,) float64 L2 distances.
        labels: (N,) int64, 1 defective.
        groups: (N,) int64 PCB type indices.
    """

    distances: np.ndarray
    labels: np.ndarray
    groups: np.ndarray


def autocast(device: torch.device, enabled: bool = True) -> contextlib.AbstractContextManager:
    """bfloat16 mixed precision on CUDA when enabled; nothing on CPU."""
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module inside a DistributedDataParallel wrapper."""
    return model.module if hasattr(model, "module") else model


@torch.inference_mode()
def evaluate(
    model: nn.Module,
    loader: DataLoader,
    device: torch.device,
    amp: bool = True,
    progress: Callable[[int], None] | None = None,
) -> PairScores:
    """Score of every tested patch against its reference (paper mode: the L2 distance).

    Args:
        model: a network with ``score_pairs`` (or a DDP wrapper of one).
        loader: yields (tested (B,1,S,S), reference (B,1,S,S), label (B,), group (B,)).
        device: where to compute.
        amp: bfloat16 autocast on CUDA.
        progress: called with the number of patches done after each batch.
    """
    net = unwrap(model)
    was_training = net.training
    net.eval()
    dists, labels, groups = [], [], []
    for tested, reference, label, group in loader:
        with autocast(device, amp):
            scores = net.score_pairs(tested.to(device, non_blocking=True), reference.to(device, non_blocking=True))
        dists.append(scores.float().cpu().double().numpy())
        labels.append(np.asarray(label))
        groups.append(np.asarray(group))
        if progress is not None:
            progress(len(label))
    net.train(was_training)
    if not dists:
        return PairScores(np.zeros(0), np.zeros(0, np.int64), np.zeros(0, np.int64))
    cat = np.concatenate
    return PairScores(cat(dists), cat(labels).astype(np.int64), cat(groups).astype(np.int64))


@dataclass
class StepStats:
    """What one optimisation step reports."""

    loss: float
    loss_triplet: float
    loss_ce: float
    triplets: int
    seconds: float


def train_step(
    model: nn.Module,
    criterion: nn.Module,
    optimizer: torch.optim.Optimizer,
    batch: tuple,
    device: torch.device,
    amp: bool = True,
) -> StepStats:
    """One optimisation step; ``criterion.batch_loss(model, batch, device)`` knows the batch layout
    (triplets for the paper's mode, pairs for the reference-aware mode)."""
    t0 = time.perf_counter()
    with autocast(device, amp):
        parts, n = criterion.batch_loss(model, batch, device)
    optimizer.zero_grad(set_to_none=True)
    parts.total.backward()
    optimizer.step()
    return StepStats(parts.total.item(), parts.triplet.item(), parts.ce.item(), n, time.perf_counter() - t0)


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
) -> float:
    """Train over one epoch's batches of triplets.

    Args:
        loader: yields this epoch's batches from step ``start_step`` on (a resumed epoch starts late).
        on_step: called after each step with (epoch, step within the epoch, its stats); checkpoints
            and logging live there.

    Returns:
        Mean loss of the steps run.
    """
    model.train()
    losses = []
    for step, batch in enumerate(loader, start=start_step):
        stats = train_step(model, criterion, optimizer, batch, device, amp)
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
