"""The ``diff`` mode: one shared backbone over tested and reference patch, per-stage feature
differences fused before pooling, so that a defect of a few pixels is not pooled away first."""

from __future__ import annotations

import torch

from pcbsiam.models.base import register_mode
from pcbsiam.models.fusion import PooledLogitModel


@register_mode
class ReferenceAwareNet(PooledLogitModel):
    """Scores a (tested, reference) pair from the differences of their per-stage feature maps."""

    mode = "diff"
    encodes_references = True

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        """(B, 1, S, S) -> per-stage (B, C_s, H_s, W_s) feature maps (the part of a reference worth caching)."""
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
        """(B,) logits of patch pairs, both sides through the backbone in one pass."""
        return self.forward(tested, reference)
