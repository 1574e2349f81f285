"""Training losses: the paper's triplet margin loss on explicit triplets plus cross-entropy on PCB types, and
binary cross-entropy on (tested, reference) pairs."""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from pytorch_metric_learning import losses, reducers
from torch import nn
from torchvision.ops import sigmoid_focal_loss


class LossParts(NamedTuple):
    """Total loss and the parts it sums, by name (detached scalars; only the parts the loss has)."""

    total: torch.Tensor
    parts: dict[str, torch.Tensor]


def loss_triplets(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Index triples for PML from a batch laid out as B triplets of (anchor, positive, negative).

    The paper's positive is always defective and its negative defect-free, while the anchor
    alternates. The triplet loss needs (anchor, same class, other class), so for a defect-free
    anchor the roles of positive and negative are swapped.

    Args:
        labels: (B, 3) defect labels of anchor, positive, negative.

    Returns:
        (a, p, n) index tensors of shape (B,) into the flattened (3B,) batch.
    """
    b = labels.shape[0]
    base = torch.arange(b, device=labels.device) * 3
    same_as_positive = labels[:, 0] == labels[:, 1]
    pos = torch.where(same_as_positive, base + 1, base + 2)
    neg = torch.where(same_as_positive, base + 2, base + 1)
    return base, pos, neg


class SiameseLoss(nn.Module):
    """``triplet_weight * triplet + ce_weight * cross-entropy`` (either may be switched off).

    Args:
        kind: ``triplet``, ``ce`` or ``triplet+ce`` (the rows of the paper's Table 4).
        margin: triplet margin alpha on L2 distances of unit embeddings.
        triplet_weight: weight of the triplet term.
        ce_weight: weight of the cross-entropy term (on the anchors' PCB type).
    """

    def __init__(
        self, kind: str = "triplet+ce", margin: float = 0.2, triplet_weight: float = 1.0, ce_weight: float = 1.0
    ) -> None:
        super().__init__()
        self.use_triplet = "triplet" in kind
        self.use_ce = "ce" in kind
        self.triplet_weight = triplet_weight
        self.ce_weight = ce_weight
        self.triplet = losses.TripletMarginLoss(margin=margin, reducer=reducers.MeanReducer())

    def forward(
        self, embeddings: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor, groups: torch.Tensor
    ) -> LossParts:
        """Args:
        embeddings: (3B, D) for B triplets flattened as (a, p, n, a, p, n, ...).
        logits: (3B, K) classifier outputs.
        labels: (B, 3) defect labels.
        groups: (B, 3) PCB type indices.
        """
        total = embeddings.new_zeros(())
        parts: dict[str, torch.Tensor] = {}
        if self.use_triplet:
            idx = loss_triplets(labels)
            flat = torch.arange(embeddings.shape[0], device=embeddings.device)
            trip = self.triplet(embeddings.float(), flat, indices_tuple=idx)
            total = total + self.triplet_weight * trip
            parts["triplet"] = trip.detach()
        if self.use_ce:
            anchors = torch.arange(0, logits.shape[0], 3, device=logits.device)
            ce = F.cross_entropy(logits[anchors].float(), groups[:, 0])
            total = total + self.ce_weight * ce
            parts["ce"] = ce.detach()
        return LossParts(total, parts)

    def batch_loss(self, model: nn.Module, batch: tuple, device: torch.device) -> tuple[LossParts, int]:
        """Loss of a batch of triplets: images (B, 3, 1, S, S), labels (B, 3), groups (B, 3).

        Returns:
            (loss parts, number of triplets).
        """
        images, labels, groups = batch
        out = model(images.flatten(0, 1).to(device, non_blocking=True))
        return self(out.embedding.float(), out.logits.float(), labels.to(device), groups.to(device)), images.shape[0]


class PairLoss(nn.Module):
    """Binary cross-entropy on (tested, reference) pairs for the reference-aware mode, or its focal form.

    Args:
        pos_weight: weight of the defective class (1: none).
        focal_gamma: 0 for plain cross-entropy; above 0 the focal loss (``torchvision.ops.sigmoid_focal_loss``,
            no class-balancing alpha): each pair's term scaled by ``(1 - p_true) ** focal_gamma``, so pairs the
            network already gets right with confidence count less than the hard ones.
    """

    def __init__(self, pos_weight: float = 1.0, focal_gamma: float = 0.0) -> None:
        super().__init__()
        self.register_buffer("pos_weight", torch.tensor(float(pos_weight)))
        self.focal_gamma = float(focal_gamma)

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> LossParts:
        """Args: logits (B,), labels (B,) in {0, 1}."""
        logits, target = logits.float(), labels.float()
        if self.focal_gamma == 0:
            loss = F.binary_cross_entropy_with_logits(logits, target, pos_weight=self.pos_weight)
            return LossParts(loss, {"bce": loss.detach()})
        terms = sigmoid_focal_loss(logits, target, alpha=-1, gamma=self.focal_gamma, reduction="none")
        loss = (terms * torch.where(target > 0, self.pos_weight, 1.0)).mean()
        return LossParts(loss, {"focal": loss.detach()})

    def batch_loss(self, model: nn.Module, batch: tuple, device: torch.device) -> tuple[LossParts, int]:
        """Loss of a batch of pairs: tested (B, 1, S, S), reference (B, 1, S, S), labels (B,)."""
        tested, reference, labels = batch[:3]
        logits = model(tested.to(device, non_blocking=True), reference.to(device, non_blocking=True))
        return self(logits, labels.to(device)), tested.shape[0]
