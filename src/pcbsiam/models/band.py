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

import numpy as np
import torch
import torch.nn.functional as F

from pcbsiam.config import ModelConfig
from pcbsiam.data.transforms import GREY_MEAN, GREY_STD, to_tensor

#: Band radius of the gate of models without a band channel (px).
DEFAULT_GATE_RADIUS = 2


def _dilate(mask: torch.Tensor, radius: int) -> torch.Tensor:
    """Binary dilation of (B, 1, H, W) {0, 1} maps by a (2r+1)-square; outside the map counts as 0.

    Separable, as a running maximum of shifted copies along rows, then columns: the same values as a
    (2r+1)-square max pooling, several times faster on CPU than ``max_pool2d`` and exported to ONNX
    as plain Pad / Slice / Max.
    """
    h, w = mask.shape[-2:]
    rows = F.pad(mask, (0, 0, radius, radius))
    out = rows[..., 0:h, :]
    for k in range(1, 2 * radius + 1):
        out = torch.maximum(out, rows[..., k : k + h, :])
    cols = F.pad(out, (radius, radius))
    out = cols[..., 0:w]
    for k in range(1, 2 * radius + 1):
        out = torch.maximum(out, cols[..., k : k + w])
    return out


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
        input_size: side of the network's input; crops of this side are gated on their uint8 pixels
            (:meth:`keep_crops`), others once resized (:meth:`keep`).
    """

    max_pixels: int
    margin: int
    radius: int
    level: float
    window: tuple[int, int]
    input_size: int = 0

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
        return cls(cfg.gate, cfg.gate_margin, radius, cfg.band_level, window, cfg.input_size)

    def counts(self, tested: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        """(B,) band-pixel counts inside the window of (B, 1, S, S) normalised pairs."""
        lo, hi = self.window
        band = band_defects(tested, reference, self.radius, self.level)  # whole crop, as the band channel
        return band[..., lo:hi, lo:hi].flatten(1).sum(1)

    def keep(self, tested: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        """(B,) bool: True for the pairs the network must score."""
        return self.counts(tested, reference) > self.max_pixels

    def keep_crops(self, tested: np.ndarray, reference: np.ndarray) -> np.ndarray | None:
        """:meth:`keep` of (B, S, S) uint8 crops that need no resizing (S = ``input_size``), in NumPy on booleans:
        the same verdicts as on the normalised tensors, several times faster, and no tensors for the skipped
        tiles. None for crops of another size (they must be resized first: use :meth:`keep`)."""
        if tested.ndim != 3 or tested.shape[1:] != (self.input_size, self.input_size):
            return None
        copper = _copper_table(self.level)
        t, r = copper[tested], copper[reference]
        extra = t & ~_dilate_bool(r, self.radius)
        missing = ~t & ~_dilate_bool(~r, self.radius)  # erosion of r, outside counting as copper
        lo, hi = self.window
        band = (extra | missing)[:, lo:hi, lo:hi]
        return band.reshape(len(band), -1).sum(1) > self.max_pixels


def _copper_table(level: float) -> np.ndarray:
    """(256,) bool: which uint8 grey levels :func:`band_defects` counts as copper, found by the very
    normalisation and comparison the tensors go through (no rounding can differ)."""
    grey = np.arange(256, dtype=np.uint8).reshape(1, 16, 16)
    cut = (level - GREY_MEAN) / GREY_STD
    return (to_tensor(grey, 16) > cut).flatten().numpy()


def _dilate_bool(mask: np.ndarray, radius: int) -> np.ndarray:
    """Binary dilation of (B, H, W) bool maps by a (2r+1)-square, outside counting as False."""
    rows = mask.copy()
    for k in range(1, radius + 1):
        rows[:, k:] |= mask[:, :-k]
        rows[:, :-k] |= mask[:, k:]
    out = rows.copy()
    for k in range(1, radius + 1):
        out[:, :, k:] |= rows[:, :, :-k]
        out[:, :, :-k] |= rows[:, :, k:]
    return out


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
