"""The ``stack`` mode: early fusion. The tested patch, its reference and their absolute difference
enter one backbone as channels, so the first convolution already sees where the two disagree; with
``model.band`` > 0 a fourth channel holds the defect pixels of a classical tolerance-band comparison
(:mod:`pcbsiam.models.band`), and with ``model.fine_band`` > 0 a fifth those of a narrower band (defects
shallower than ``model.band``, e.g. small bites into a copper edge)."""

from __future__ import annotations

import torch

from pcbsiam.config import ModelConfig
from pcbsiam.data.transforms import DIHEDRAL_VIEWS, dihedral_tensor
from pcbsiam.errors import ConfigError
from pcbsiam.models.band import band_defects
from pcbsiam.models.base import register_mode
from pcbsiam.models.fusion import PooledLogitModel


@register_mode
class StackedPairNet(PooledLogitModel):
    """Channels (tested, reference, |tested - reference| [, band defects [, fine-band defects]]) into one
    backbone.

    Nothing of a reference can be computed ahead of its tested patch, so ``encode`` is the identity
    and the whole network runs in ``compare``.
    """

    mode = "stack"
    encodes_references = False

    @classmethod
    def check_config(cls, cfg: ModelConfig) -> None:
        """Any band radius works here (the band channels exist in this mode only); the fine band goes with a
        wider ``model.band``."""
        if cfg.fine_band > 0 and not 0 < cfg.fine_band < cfg.band:
            raise ConfigError(
                f"model.fine_band ({cfg.fine_band}) is a second, narrower band: it needs model.band above it, "
                f"got model.band={cfg.band}"
            )

    @property
    def in_channels(self) -> int:
        """3, plus one per band channel (``model.band``, ``model.fine_band``)."""
        return 3 + (self.cfg.band > 0) + (self.cfg.fine_band > 0)

    def channels(self, tested: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        """(B, 1, S, S) tested and reference patches -> (B, :attr:`in_channels`, S, S) backbone input."""
        stacked = [tested, reference, (tested - reference).abs()]
        for radius in (self.cfg.band, self.cfg.fine_band):
            if radius > 0:
                stacked.append(band_defects(tested, reference, radius, self.cfg.band_level))
        return torch.cat(stacked, dim=1)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The patches themselves: (B, 1, S, S)."""
        return x

    def compare(self, tested: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        """(B,) logits of (B, 1, S, S) tested and reference patches; with ``model.views`` > 1 the mean logit
        of that many flips and quarter turns of each pair (tested and reference turned together)."""
        views = DIHEDRAL_VIEWS[: self.cfg.views]
        if len(views) == 1:
            return self.forward(tested, reference)
        logits = [self.forward(dihedral_tensor(tested, *v), dihedral_tensor(reference, *v)) for v in views]
        return torch.stack(logits).mean(0)

    def forward(self, tested: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        """Args: (B, 1, S, S) tested and reference patches. Returns: (B,) defect logits."""
        return self.head(self.backbone(self.channels(tested, reference)))

    def score_pairs(self, tested: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        """(B,) logits of patch pairs (:meth:`compare`)."""
        return self.compare(tested, reference)
