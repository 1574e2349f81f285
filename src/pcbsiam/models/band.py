"""The classical tolerance-band comparison as an input channel (``model.band``, stack mode).

Both patches are binarised at a fixed grey level; a tested pixel counts as a defect pixel where it
disagrees with the reference beyond a square band of ``radius`` px: copper where the reference has
none within ``radius`` (shorts, spurs, spurious copper) or no copper where the reference has copper
``radius`` px deep inside (opens, mousebites, pin-holes). The map is what a classical AOI
comparison counts; given as a fourth channel, the network learns which of its pixels matter.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from pcbsiam.config import ModelConfig
from pcbsiam.data.transforms import GREY_MEAN, GREY_STD

#: Band radius of the gate of models without a band channel (px).
DEFAULT_GATE_RADIUS = 2


def _dilate(mask: torch.Tensor, radius: int) -> torch.Tensor:
    """Binary dilation of (B, 1, H, W) {0, 1} maps by a (2r+1)-square."""
    return F.max_pool2d(mask, 2 * radius + 1, stride=1, padding=radius)


def _erode(mask: torch.Tensor, radius: int) -> torch.Tensor:
    """Binary erosion of (B, 1, H, W) {0, 1} maps by a (2r+1)-square (outside counts as copper)."""
    return 1.0 - _dilate(1.0 - mask, radius)


def band_defects(tested: torch.Tensor, reference: torch.Tensor, radius: int, level: float = 0.5) -> torch.Tensor:
    """Defect pixels of a tolerance-band comparison.

    Args:
        tested: (B, 1, S, S) normalised patches (as ``transforms.to_tensor`` makes them).
        reference: (B, 1, S, S) their references, same scaling.
        radius: band half-width in px (>= 1).
        level: binarisation level as a fraction of full scale (0.5 = mid-grey).

    Returns:
        (B, 1, S, S) float map, 1 where the tested patch disagrees beyond the band, else 0.
    """
    cut = (level - GREY_MEAN) / GREY_STD
    t = (tested > cut).to(tested.dtype)
    r = (reference > cut).to(tested.dtype)
    extra = t * (1.0 - _dilate(r, radius))
    missing = (1.0 - t) * _erode(r, radius)
    return torch.maximum(extra, missing)


@dataclass(frozen=True)
class TileGate:
    """Skips the network on tiles where the tolerance-band comparison finds nothing.

    A tile whose band map (:func:`band_defects`) holds at most ``max_pixels`` defect pixels within
    the tile and ``margin`` px around it is clean for certain enough: the network is not run on it
    and it gets the model's ``null_score``. Measured on held-out DeepPCB groups (docs/RESULTS.md),
    this skips about 70 % of tiles and no defect the network finds.

    Attributes:
        max_pixels: largest band-pixel count of a skipped tile (0: only empty band maps).
        margin: px around the tile that are looked at too (the crop's context shows them).
        radius: band half-width in px.
        level: binarisation level, a fraction of full scale.
        window: (start, stop) of the tile plus margin along each side of the network's input, in
            input pixels.
    """

    max_pixels: int
    margin: int
    radius: int
    level: float
    window: tuple[int, int]

    @classmethod
    def of(cls, cfg: ModelConfig, patch: int, context: int) -> TileGate | None:
        """The gate ``cfg`` asks for (``model.gate`` >= 0) for crops of ``patch + 2 * context`` px
        resized to ``cfg.input_size``; None when the gate is off."""
        if cfg.gate < 0:
            return None
        scale = cfg.input_size / (patch + 2 * context)
        lo = max(0, context - cfg.gate_margin)
        hi = min(patch + 2 * context, context + patch + cfg.gate_margin)
        radius = cfg.band if cfg.band > 0 else DEFAULT_GATE_RADIUS
        window = (math.floor(lo * scale), min(cfg.input_size, math.ceil(hi * scale)))
        return cls(cfg.gate, cfg.gate_margin, radius, cfg.band_level, window)

    def counts(self, tested: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        """(B,) band-pixel counts inside the window of (B, 1, S, S) normalised pairs."""
        lo, hi = self.window
        band = band_defects(tested, reference, self.radius, self.level)  # whole crop, as the band channel
        return band[..., lo:hi, lo:hi].flatten(1).sum(1)

    def keep(self, tested: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        """(B,) bool: True for the pairs the network must score."""
        return self.counts(tested, reference) > self.max_pixels


def gated_scores(
    gate: TileGate | None,
    tested: torch.Tensor,
    reference: torch.Tensor,
    score: Callable[[torch.Tensor], torch.Tensor],
    null_score: float,
) -> torch.Tensor:
    """(B,) scores with the network run only on the pairs ``gate`` keeps.

    Args:
        gate: the gate, or None to score every pair.
        tested: (B, 1, S, S) normalised tested patches.
        reference: (B, 1, S, S) their references.
        score: maps a bool (B,) selection to the (K,) scores of the K selected pairs.
        null_score: the score of a skipped pair.

    Returns:
        (B,) float32 scores on the CPU.
    """
    if gate is None:
        return score(torch.ones(len(tested), dtype=torch.bool)).float().cpu()
    keep = gate.keep(tested.float(), reference.float()).cpu()
    out = torch.full((len(tested),), float(null_score))
    if keep.any():
        out[keep] = score(keep).float().cpu()
    return out
