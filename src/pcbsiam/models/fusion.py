"""Heads over multi-scale feature maps: the paper's fusion into an embedding, and a pooled scoring head."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pcbsiam.config import ModelConfig
from pcbsiam.models.backbone import check_scales, create_backbone
from pcbsiam.models.base import PairModel


class FusionHead(nn.Module):
    """Fuse multi-scale feature maps into an L2-normalised embedding.

    Args:
        in_channels: channel count of each stage's map (from the backbone's ``feature_info``).
        hidden_dim: width of the first fully connected layer (paper: 4096).
        embedding_dim: embedding size D (paper: 32).
    """

    def __init__(self, in_channels: list[int], hidden_dim: int = 4096, embedding_dim: int = 32) -> None:
        super().__init__()
        self.fc1 = nn.Linear(sum(in_channels), hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, embedding_dim)

    @staticmethod
    def pool(features: list[torch.Tensor]) -> torch.Tensor:
        """Global max pool each (B, C_s, H_s, W_s) map and concatenate: (B, sum C_s)."""
        return torch.cat([F.adaptive_max_pool2d(f, 1).flatten(1) for f in features], dim=1)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        """Args: features, one (B, C_s, H_s, W_s) per stage. Returns: (B, D) unit-norm embeddings."""
        h = F.relu(self.fc1(self.pool(features)))
        return F.normalize(self.fc2(h).float(), p=2, dim=1)


class PooledHead(nn.Module):
    """Per-stage global max and mean pooling, concatenated, fc -> ReLU -> fc 1 (the reference-aware modes).

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


class PooledLogitModel(PairModel):
    """What the reference-aware modes share: a backbone over ``in_channels`` input channels and a
    :class:`PooledHead` giving a defect logit; trained on pairs with binary cross-entropy."""

    score_name = "logit"
    score_label = "defect score (logit)"
    null_score = -20.0  # a certainly clean pair: sigmoid(-20) ~ 2e-9
    objective = "pair"

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__(cfg)
        self.backbone = create_backbone(cfg.backbone, check_scales(cfg.scales), in_chans=self.in_channels)
        self.head = PooledHead(list(self.backbone.feature_info.channels()), cfg.hidden_dim)
