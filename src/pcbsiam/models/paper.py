"""The paper's mode: the Siamese deep feature-fusion residual network (Dai et al. 2023, section 2.2)."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from pcbsiam.config import ModelConfig
from pcbsiam.models.backbone import check_scales, create_backbone
from pcbsiam.models.base import PairModel, register_mode
from pcbsiam.models.fusion import FusionHead


class Embedded(NamedTuple):
    """Network output.

    Attributes:
        embedding: (B, D) unit-norm embeddings.
        logits: (B, K) PCB-type logits of the classifier head.
    """

    embedding: torch.Tensor
    logits: torch.Tensor


@register_mode
class SiameseFusionNet(PairModel):
    """Shared-weight network embedding a greyscale patch; the score is the L2 distance of two embeddings.

    Args:
        cfg: network settings; ``cfg.num_classes`` sizes the classifier head (PCB types).
    """

    mode = "paper"
    score_name = "distance"
    score_label = "L2 distance"
    encodes_references = True
    embeds = True
    objective = "triplet"

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__(cfg)
        self.backbone = create_backbone(cfg.backbone, check_scales(cfg.scales), in_chans=1)
        channels = list(self.backbone.feature_info.channels())
        self.head = FusionHead(channels, cfg.hidden_dim, cfg.embedding_dim)
        self.classifier = nn.Linear(cfg.embedding_dim, max(1, cfg.num_classes))

    def forward(self, x: torch.Tensor) -> Embedded:
        """Args: x (B, 1, S, S) normalised patches. Returns: Embedded with (B, D) and (B, K)."""
        emb = self.head(self.backbone(x))
        return Embedded(emb, self.classifier(emb))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, S, S) -> (B, D) embeddings."""
        return self.head(self.backbone(x))

    @staticmethod
    def distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """L2 distance of paired embeddings: (B, D), (B, D) -> (B,)."""
        return (a - b).pow(2).sum(dim=1).clamp_min(0).sqrt()

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, S, S) -> (B, D): what is cached of a reference."""
        return self.embed(x)

    def compare(self, tested: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        """(B,) L2 distances of (B, D) tested and reference embeddings."""
        return self.distance(tested.float(), reference.float())

    def score_pairs(self, tested: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        """(B,) distances of (B, 1, S, S) tested patches to their references, in one forward pass."""
        a, b = self.embed(torch.cat([tested, reference])).float().chunk(2)
        return self.distance(a, b)
