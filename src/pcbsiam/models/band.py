"""The classical tolerance-band comparison as an input channel (``model.band``, stack mode).

Both patches are binarised at a fixed grey level; a tested pixel counts as a defect pixel where it
disagrees with the reference beyond a square band of ``radius`` px: copper where the reference has
none within ``radius`` (shorts, spurs, spurious copper) or no copper where the reference has copper
``radius`` px deep inside (opens, mousebites, pin-holes). The map is what a classical AOI
comparison counts; given as a fourth channel, the network learns which of its pixels matter.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from pcbsiam.data.transforms import GREY_MEAN, GREY_STD


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
