"""The candidate verifier: what a defect candidate is, and where its box lies.

A candidate is a window of the registered board pair around a blob of the tolerance-band difference.
The network sees three channels of it (tested, reference, band defects), pools every chosen ResNet
stage (max and mean) and gives logits over "no defect" and the six DeepPCB types, and the move of
the candidate's box towards the defect's annotated box, in window units. With ``rule_types`` it also
reads the type the classical detector's connectivity rules gave the candidate (one-hot, 0: none).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from pcbsiam.data.defects import DEFECT_TYPES
from pcbsiam.models.backbone import check_scales, create_backbone
from pcbsiam.models.band import band_defects


@dataclass
class VerifierConfig:
    """Plain settings of a :class:`CandidateNet` (saved with its weights).

    Attributes:
        backbone: timm ResNet name.
        scales: ResNet stages pooled.
        hidden_dim: width of the shared hidden layer.
        input_size: side of the network's input window, px.
        band: tolerance-band radius of the third channel, px.
        band_level: its binarisation level, a fraction of full scale.
        num_types: defect types (class 0 is "no defect").
        rule_types: the classical rules' type of each candidate is an input beside the pooled features
            (False in checkpoints written before it existed).
    """

    backbone: str = "resnet18"
    scales: list[int] = field(default_factory=lambda: [2, 3, 4])
    hidden_dim: int = 256
    input_size: int = 64
    band: int = 2
    band_level: float = 0.5
    num_types: int = len(DEFECT_TYPES)
    rule_types: bool = False

    def to_dict(self) -> dict:
        """Plain dict."""
        return asdict(self)


class Verdicts(NamedTuple):
    """What :class:`CandidateNet` says of (B) candidates.

    Attributes:
        logits: (B, 1 + num_types) class logits; class 0 is "no defect".
        deltas: (B, 4) moves of the box corners ``x1 y1 x2 y2``, in window sides.
    """

    logits: torch.Tensor
    deltas: torch.Tensor


class CandidateNet(nn.Module):
    """Types and box corrections of defect candidates.

    Args:
        cfg: the settings.
    """

    def __init__(self, cfg: VerifierConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.backbone = create_backbone(cfg.backbone, check_scales(cfg.scales), in_chans=3)
        width = 2 * sum(self.backbone.feature_info.channels()) + (1 + cfg.num_types if cfg.rule_types else 0)
        self.hidden = nn.Linear(width, cfg.hidden_dim)
        self.classify = nn.Linear(cfg.hidden_dim, 1 + cfg.num_types)
        self.regress = nn.Linear(cfg.hidden_dim, 4)

    def forward(
        self, tested: torch.Tensor, reference: torch.Tensor, rule_types: torch.Tensor | None = None
    ) -> Verdicts:
        """Verdicts of (B, 1, S, S) normalised tested windows against their (B, 1, S, S) reference windows.

        Args:
            tested: (B, 1, S, S) tested windows.
            reference: (B, 1, S, S) reference windows.
            rule_types: (B,) int64 the rules' types (0: none); read only with ``cfg.rule_types``.

        Raises:
            ValueError: the verifier reads rule types and none are given.
        """
        band = band_defects(tested, reference, self.cfg.band, self.cfg.band_level)
        feats = self.backbone(torch.cat([tested, reference, band], dim=1))
        pooled = [p for f in feats for p in (F.adaptive_max_pool2d(f, 1).flatten(1), f.mean((2, 3)))]
        if self.cfg.rule_types:
            if rule_types is None:
                raise ValueError("this verifier was trained with the classical rules' types: give rule_types")
            pooled.append(F.one_hot(rule_types.long(), 1 + self.cfg.num_types).to(pooled[0].dtype))
        h = F.relu(self.hidden(torch.cat(pooled, dim=1)))
        return Verdicts(self.classify(h).float(), self.regress(h).float())
