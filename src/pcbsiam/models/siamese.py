"""The Siamese deep feature-fusion residual network (Dai et al. 2023, section 2.2)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import NamedTuple

import torch
from torch import nn

from pcbsiam.models.backbone import check_scales, create_backbone
from pcbsiam.models.fusion import FusionHead


class Embedded(NamedTuple):
    """Network output.

    Attributes:
        embedding: (B, D) unit-norm embeddings.
        logits: (B, K) PCB-type logits of the classifier head.
    """

    embedding: torch.Tensor
    logits: torch.Tensor


@dataclass
class ModelConfig:
    """Plain settings of the network (saved with every checkpoint and bundle)."""

    mode: str = "paper"
    backbone: str = "resnet50"
    scales: list[int] = field(default_factory=lambda: [1, 2, 3, 4])
    embedding_dim: int = 32
    hidden_dim: int = 4096
    input_size: int = 128
    num_classes: int = 1
    weights: str | None = None
    band: int = 0  # stack mode: tolerance-band radius (px) of the classical-comparison channel; 0 = none
    band_level: float = 0.5  # its binarisation level, a fraction of full scale


class SiameseFusionNet(nn.Module):
    """Shared-weight network embedding a greyscale patch; the decision compares two embeddings.

    The distance threshold is a buffer, so checkpoints and exported graphs carry it.

    Args:
        cfg: network settings; ``cfg.num_classes`` sizes the classifier head (PCB types).
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.backbone = create_backbone(cfg.backbone, check_scales(cfg.scales), in_chans=1)
        channels = list(self.backbone.feature_info.channels())
        self.head = FusionHead(channels, cfg.hidden_dim, cfg.embedding_dim)
        self.classifier = nn.Linear(cfg.embedding_dim, max(1, cfg.num_classes))
        self.register_buffer("threshold", torch.tensor(float("nan")))

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

    def compare(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """(B,) scores of encoded tested and reference patches: their L2 distance."""
        return self.distance(a.float(), b.float())

    def score_pairs(self, tested: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        """(B,) distances of (B, 1, S, S) tested patches to their references, in one forward pass."""
        emb = self.embed(torch.cat([tested, reference])).float()
        a, b = emb.chunk(2)
        return self.distance(a, b)

    def decide(self, distance: torch.Tensor) -> torch.Tensor:
        """Verdicts (True = defective) of (B,) distances at the stored threshold."""
        if torch.isnan(self.threshold):
            raise RuntimeError("the model has no threshold yet: run `pcbsiam calibrate` first")
        return distance > self.threshold


MODES = ("paper", "diff", "stack")


def create_model(cfg: ModelConfig) -> nn.Module:
    """The network of ``cfg.mode``: ``paper`` (embeddings compared by L2 distance), ``diff``
    (feature differences scored by a head) or ``stack`` (tested, reference and their difference as
    input channels). No weights are loaded."""
    if cfg.mode == "paper":
        return SiameseFusionNet(cfg)
    if cfg.mode == "diff":
        from pcbsiam.models.diffnet import ReferenceAwareNet

        return ReferenceAwareNet(cfg)
    if cfg.mode == "stack":
        from pcbsiam.models.diffnet import StackedPairNet

        return StackedPairNet(cfg)
    from pcbsiam.errors import ConfigError

    raise ConfigError(f"model.mode must be one of {MODES}, got {cfg.mode!r}")


def build_model(cfg: ModelConfig) -> nn.Module:
    """The network for ``cfg``, with local ImageNet weights in the backbone if ``cfg.weights`` names a file."""
    model = create_model(cfg)
    if cfg.weights:
        from pcbsiam.models.backbone import load_backbone_weights

        load_backbone_weights(model.backbone, cfg.weights)
    return model


def model_config_dict(cfg: ModelConfig) -> dict:
    """Plain dict of ``cfg`` (for YAML and checkpoints)."""
    return asdict(cfg)
