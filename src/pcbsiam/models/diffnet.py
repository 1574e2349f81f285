"""Reference-aware modes, scoring a (tested, reference) pair directly.

``diff``: one shared backbone over tested and reference patch, per-stage feature differences fused
before pooling, so that a defect of a few pixels is not pooled away first.
``stack``: early fusion: the tested patch, its reference and their absolute difference enter one
backbone as three channels, so the first convolution already sees where the two disagree; with
``model.band`` > 0 a fourth channel holds the defect pixels of a classical tolerance-band comparison
(:mod:`pcbsiam.models.band`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pcbsiam.models.backbone import check_scales, create_backbone
from pcbsiam.models.band import band_defects
from pcbsiam.models.siamese import ModelConfig


class PooledHead(nn.Module):
    """Per-stage global max and mean pooling, concatenated, fc -> ReLU -> fc 1.

    Args:
        in_channels: channel count of each stage's map.
        hidden_dim: width of the hidden layer.
    """

    def __init__(self, in_channels: list[int], hidden_dim: int = 512) -> None:
        super().__init__()
        self.fc1 = nn.Linear(2 * sum(in_channels), hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, 1)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        """Args: per stage (B, C_s, H_s, W_s). Returns: (B,) logits."""
        pooled = [
            p
            for f in features
            for p in (F.adaptive_max_pool2d(f, 1).flatten(1), F.adaptive_avg_pool2d(f, 1).flatten(1))
        ]
        return self.fc2(F.relu(self.fc1(torch.cat(pooled, dim=1)))).squeeze(1).float()


class ReferenceAwareNet(nn.Module):
    """Scores a (tested, reference) pair directly; higher = more likely defective.

    The threshold on the score (a logit) is a buffer, as in the paper's mode.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.backbone = create_backbone(cfg.backbone, check_scales(cfg.scales), in_chans=1)
        self.head = PooledHead(list(self.backbone.feature_info.channels()), cfg.hidden_dim)
        self.register_buffer("threshold", torch.tensor(float("nan")))

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        """(B, 1, S, S) -> per-stage feature maps (the part of a reference worth caching)."""
        return self.backbone(x)

    def compare(self, tested: list[torch.Tensor], reference: list[torch.Tensor]) -> torch.Tensor:
        """Scores (B,) of encoded tested and reference patches: the head over |f_t - f_r| per stage."""
        return self.head([(a - b).abs() for a, b in zip(tested, reference, strict=True)])

    def forward(self, tested: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        """Args: (B, 1, S, S) tested and reference patches. Returns: (B,) defect logits."""
        feats = self.backbone(torch.cat([tested, reference]))
        b = tested.shape[0]
        return self.compare([f[:b] for f in feats], [f[b:] for f in feats])

    def score_pairs(self, tested: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        """(B,) scores of patch pairs (the quantity the threshold applies to)."""
        return self.forward(tested, reference)

    def decide(self, score: torch.Tensor) -> torch.Tensor:
        """Verdicts (True = defective) at the stored threshold."""
        if torch.isnan(self.threshold):
            raise RuntimeError("the model has no threshold yet: run `pcbsiam calibrate` first")
        return score > self.threshold


class StackedPairNet(nn.Module):
    """Early fusion of a pair: channels (tested, reference, |tested - reference|) into one backbone,
    plus the tolerance-band defect map when ``cfg.band`` > 0.

    Nothing of a reference can be computed ahead of its tested patch, so ``encode`` is the identity
    and the whole network runs in ``compare``.
    """

    encodes_references = False  # nothing of a reference to compute once and share

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        in_chans = 4 if cfg.band > 0 else 3
        self.backbone = create_backbone(cfg.backbone, check_scales(cfg.scales), in_chans=in_chans)
        self.head = PooledHead(list(self.backbone.feature_info.channels()), cfg.hidden_dim)
        self.register_buffer("threshold", torch.tensor(float("nan")))

    def channels(self, tested: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        """(B, 1, S, S) tested and reference patches -> (B, 3 or 4, S, S) backbone input."""
        stacked = [tested, reference, (tested - reference).abs()]
        if self.cfg.band > 0:
            stacked.append(band_defects(tested, reference, self.cfg.band, self.cfg.band_level))
        return torch.cat(stacked, dim=1)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The patches themselves: (B, 1, S, S)."""
        return x

    def compare(self, tested: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        """(B,) scores of tested and reference patches."""
        return self.forward(tested, reference)

    def forward(self, tested: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        """Args: (B, 1, S, S) tested and reference patches. Returns: (B,) defect logits."""
        return self.head(self.backbone(self.channels(tested, reference)))

    def score_pairs(self, tested: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        """(B,) scores of patch pairs (the quantity the threshold applies to)."""
        return self.forward(tested, reference)
