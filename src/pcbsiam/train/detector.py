"""Training the candidate verifier of the learned detector (:mod:`pcbsiam.detection.learned`).

Samples are the classical detector's proposals on the training boards, each labelled with the
annotated defect it covers (its type and box) or "no defect", plus a window around every annotated
box moved at random (so that every defect is seen, even one the proposals cut badly). The network
learns the class by cross-entropy and the box by a smooth L1 loss on the corner moves of defects.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.ops import box_iou

from pcbsiam.data.images import load_gray
from pcbsiam.data.records import BoardPair
from pcbsiam.data.transforms import dihedral_boxes, dihedral_tensor, to_tensor
from pcbsiam.detection.learned import (
    LearnedDetector,
    WindowSpec,
    aligned_template,
    boxes_in_windows,
    cut_windows,
    save_detector,
)
from pcbsiam.errors import DataError
from pcbsiam.io import append_jsonl
from pcbsiam.models.detector import CandidateNet, VerifierConfig

__all__ = ["DetectorTrainConfig", "Samples", "candidate_samples", "train_detector", "train_one_epoch"]

log = logging.getLogger(__name__)


@dataclass
class DetectorTrainConfig:
    """Optimisation settings of the verifier.

    Attributes:
        epochs: passes over the samples (6, as `train-detector` and `cv-detector` default to).
        batch_size: windows per step.
        lr: AdamW peak learning rate (one-cycle: 10 % warm-up, then cosine decay).
        weight_decay: AdamW weight decay.
        box_weight: weight of the box loss beside the cross-entropy.
        jitter: annotated-box windows per defect, each moved by up to a quarter of its side.
        min_iou: a proposal whose box overlaps an annotated box by at least this IoU (or whose centre lies
            inside one) is labelled with it.
        seed: random seed.
    """

    epochs: int = 6
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-4
    box_weight: float = 5.0
    jitter: int = 1
    min_iou: float = 0.1
    seed: int = 0


@dataclass
class Samples:
    """Training windows, resized to the network's input.

    Attributes:
        tested: (N, 1, S, S) float16 normalised tested windows.
        reference: (N, 1, S, S) float16 their reference windows.
        labels: (N,) int64, 0 "no defect", else the DeepPCB type.
        proposal: (N, 4) float32 the proposed box in its window's unit frame.
        target: (N, 4) float32 the annotated box in the same frame (the proposal's own for "no defect").
        rule_types: (N,) int64 the classical rules' type of the proposal (for a moved annotated box: that of
            the proposal overlapping it most, 0 if none does).
    """

    tested: torch.Tensor
    reference: torch.Tensor
    labels: torch.Tensor
    proposal: torch.Tensor
    target: torch.Tensor
    rule_types: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)


def _label_proposals(proposals: np.ndarray, truth: np.ndarray, min_iou: float) -> tuple[np.ndarray, np.ndarray]:
    """(P,) labels and (P, 4) target boxes of (P, 4) proposals against (G, 5) annotations."""
    labels = np.zeros(len(proposals), np.int64)
    targets = proposals.copy()
    if not len(truth) or not len(proposals):
        return labels, targets
    iou = box_iou(torch.from_numpy(proposals).double(), torch.from_numpy(truth[:, :4]).double()).numpy()
    cx, cy = (proposals[:, 0] + proposals[:, 2]) / 2, (proposals[:, 1] + proposals[:, 3]) / 2
    inside = (
        (cx[:, None] >= truth[None, :, 0])
        & (cx[:, None] <= truth[None, :, 2])
        & (cy[:, None] >= truth[None, :, 1])
        & (cy[:, None] <= truth[None, :, 3])
    )
    score = np.where(inside, iou + 1.0, iou)  # a centre inside a box wins over any mere overlap
    best = score.argmax(1)
    hit = (iou[np.arange(len(best)), best] >= min_iou) | inside[np.arange(len(best)), best]
    labels[hit] = truth[best[hit], 4]
    targets[hit] = truth[best[hit], :4]
    return labels, targets


def _rule_types_of(boxes: np.ndarray, proposals: np.ndarray, types: np.ndarray, min_iou: float) -> np.ndarray:
    """(N,) the type of the proposal overlapping each of (N, 4) boxes most, if by ``min_iou``; else 0."""
    out = np.zeros(len(boxes), np.int64)
    if not len(boxes) or not len(proposals):
        return out
    iou = box_iou(torch.from_numpy(boxes).double(), torch.from_numpy(proposals).double()).numpy()
    best = iou.argmax(1)
    hit = iou[np.arange(len(boxes)), best] >= min_iou
    out[hit] = types[best[hit]]
    return out


def candidate_samples(
    pairs: Sequence[BoardPair],
    spec: WindowSpec,
    net_cfg: VerifierConfig,
    cfg: DetectorTrainConfig,
    progress: Callable[[int], None] | None = None,
) -> Samples:
    """Labelled windows of the proposals on ``pairs`` and of their jittered annotated boxes."""
    rng = np.random.default_rng(cfg.seed)
    proposer = spec.proposer()
    size = net_cfg.input_size
    keys = ("tested", "reference", "labels", "proposal", "target", "rule_types")
    parts: dict[str, list] = {k: [] for k in keys}
    for pair in pairs:
        tested, template = load_gray(pair.tested), load_gray(pair.template)
        found = proposer.detect(tested, template)
        truth = np.asarray(pair.boxes, dtype=np.float64).reshape(-1, 5)
        labels, targets = _label_proposals(found.boxes, truth, cfg.min_iou)
        boxes = [found.boxes]
        hints = [found.types]
        truth_hints = _rule_types_of(truth[:, :4], found.boxes, found.types, cfg.min_iou)
        for _ in range(cfg.jitter):
            hints.append(truth_hints)
            side = np.maximum(truth[:, 2] - truth[:, 0], truth[:, 3] - truth[:, 1])[:, None]
            move = rng.uniform(-0.25, 0.25, (len(truth), 2)) * side
            boxes.append(truth[:, :4] + np.tile(move, 2))
            labels = np.concatenate([labels, truth[:, 4].astype(np.int64)])
            targets = np.concatenate([targets, truth[:, :4]])
        boxes_all = np.concatenate(boxes)
        if len(boxes_all):
            windows = spec.windows(boxes_all)
            reference = aligned_template(template, found.shift, tested)
            fill = int(np.median(tested))
            parts["tested"].append(to_tensor(cut_windows(tested, windows, fill), size).half())
            parts["reference"].append(to_tensor(cut_windows(reference, windows, fill), size).half())
            parts["labels"].append(torch.from_numpy(labels))
            parts["proposal"].append(torch.from_numpy(boxes_in_windows(boxes_all, windows)).float())
            parts["target"].append(torch.from_numpy(boxes_in_windows(targets, windows)).float())
            parts["rule_types"].append(torch.from_numpy(np.concatenate(hints).astype(np.int64)))
        if progress is not None:
            progress(1)
    if not parts["labels"]:
        raise DataError(Path("."), "the training boards gave no candidate and no annotated defect")
    return Samples(*(torch.cat(parts[k]) for k in keys))


def augment(
    t: torch.Tensor, r: torch.Tensor, proposal: torch.Tensor, target: torch.Tensor, gen: torch.Generator
) -> tuple[torch.Tensor, ...]:
    """One of the 8 flips and quarter turns, the same for the windows and their boxes (types keep)."""
    turns = int(torch.randint(4, (1,), generator=gen))
    flip = bool(torch.randint(2, (1,), generator=gen))
    return (
        dihedral_tensor(t, turns, flip),
        dihedral_tensor(r, turns, flip),
        dihedral_boxes(proposal, turns, flip),
        dihedral_boxes(target, turns, flip),
    )


def detector_loss(net: CandidateNet, batch: Sequence[torch.Tensor], box_weight: float) -> tuple[torch.Tensor, dict]:
    """Cross-entropy over the classes plus ``box_weight`` x smooth L1 of the defects' corner moves."""
    t, r, labels, proposal, target, rule_types = batch
    out = net(t, r, rule_types)
    ce = F.cross_entropy(out.logits, labels)
    pos = labels > 0
    box = F.smooth_l1_loss(out.deltas[pos], (target - proposal)[pos], beta=0.05) if pos.any() else out.deltas.sum() * 0
    return ce + box_weight * box, {"ce": float(ce.detach()), "box": float(box.detach())}


def train_one_epoch(
    net: CandidateNet,
    samples: Samples,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    cfg: DetectorTrainConfig,
    device: torch.device,
    gen: torch.Generator,
    progress: Callable[[int], None] | None = None,
) -> dict[str, float]:
    """One shuffled, augmented pass over ``samples``; mean losses."""
    net.train()
    order = torch.randperm(len(samples), generator=gen)
    sums = {"loss": 0.0, "ce": 0.0, "box": 0.0}
    steps = 0
    for s in range(0, len(order), cfg.batch_size):
        idx = order[s : s + cfg.batch_size]
        t, r, proposal, target = augment(
            samples.tested[idx].float(), samples.reference[idx].float(), samples.proposal[idx], samples.target[idx], gen
        )
        batch = [x.to(device) for x in (t, r, samples.labels[idx], proposal, target, samples.rule_types[idx])]
        loss, parts = detector_loss(net, batch, cfg.box_weight)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        steps += 1
        sums["loss"] += float(loss.detach())
        for k, v in parts.items():
            sums[k] += v
        if progress is not None:
            progress(len(idx))
    return {k: v / max(steps, 1) for k, v in sums.items()}


def train_detector(
    train_pairs: Sequence[BoardPair],
    out: str | Path,
    net_cfg: VerifierConfig | None = None,
    spec: WindowSpec | None = None,
    cfg: DetectorTrainConfig | None = None,
    device: str = "cpu",
    progress: Callable[[str, int, int], Callable[[int], None]] | None = None,
    record: dict[str, Any] | None = None,
) -> tuple[LearnedDetector, dict[str, Any]]:
    """Train a verifier on ``train_pairs``; writes ``out/detector.pt`` and ``out/metrics.jsonl``.

    Args:
        train_pairs: annotated board pairs (DeepPCB layout).
        out: output folder.
        net_cfg, spec, cfg: settings (defaults when None).
        device: where to train.
        progress: ``progress(stage, total, unit)`` returns a callback taking the number of items done.
        record: plain facts kept with the weights (data, split).

    Returns:
        The detector and its training record.
    """
    net_cfg, spec, cfg = net_cfg or VerifierConfig(), spec or WindowSpec(), cfg or DetectorTrainConfig()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    dev = torch.device(device)
    t0 = time.perf_counter()
    tick = progress("candidates", len(train_pairs), 0) if progress else None
    samples = candidate_samples(train_pairs, spec, net_cfg, cfg, tick)
    sample_seconds = time.perf_counter() - t0
    log.info(
        "%d training windows (%d defects) from %d boards",
        len(samples),
        int((samples.labels > 0).sum()),
        len(train_pairs),
    )
    net = CandidateNet(net_cfg).to(dev)
    optimizer = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps = cfg.epochs * -(-len(samples) // cfg.batch_size)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, cfg.lr, total_steps=steps, pct_start=0.1)
    gen = torch.Generator().manual_seed(cfg.seed)
    metrics_path = out / "metrics.jsonl"
    metrics_path.unlink(missing_ok=True)
    for epoch in range(cfg.epochs):
        tick = progress(f"epoch {epoch + 1}/{cfg.epochs}", len(samples), 0) if progress else None
        means = train_one_epoch(net, samples, optimizer, scheduler, cfg, dev, gen, tick)
        append_jsonl(metrics_path, {"epoch": epoch + 1, **{k: round(v, 5) for k, v in means.items()}})
        log.info("epoch %d: %s", epoch + 1, means)
    net.eval()
    facts = {
        **(record or {}),
        "train": asdict(cfg),
        "windows": len(samples),
        "defect_windows": int((samples.labels > 0).sum()),
        "train_boards": len(train_pairs),
        "sample_seconds": round(sample_seconds, 1),
        "train_seconds": round(time.perf_counter() - t0 - sample_seconds, 1),
    }
    save_detector(out / "detector.pt", net.cpu(), spec, facts)
    return LearnedDetector(net, spec, device), facts
