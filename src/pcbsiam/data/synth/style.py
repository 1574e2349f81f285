"""Look of a synthetic PCB design: :class:`SynthStyle`, the per-group styles and the pixel values."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

COPPER = 255
BACKGROUND = 0

Range = tuple[int, int]
FloatRange = tuple[float, float]


@dataclass(frozen=True)
class SynthStyle:
    """Look of one synthetic PCB design. Lengths are pixels; ``(lo, hi)`` ranges are inclusive.

    Attributes:
        pitch: Routing grid spacing; every conductor sits on its own grid nodes.
        trace_width: Trace width range.
        pad_size: Pad diameter/side range for terminal pads.
        square_pad_prob: Probability that a pad is square rather than round.
        via_prob: Probability that a terminal is a via (ring with a hole) rather than a pad.
        via_size: Via outer diameter range.
        via_hole_ratio: Via hole diameter as a fraction of the outer diameter.
        density: Target fraction of grid nodes used or reserved by copper (about 0.65 at most).
        bus_prob: Probability that a new net is a bus of parallel traces from a row of pads.
        edge_start_prob: Probability that a new net enters from outside the image instead of a pad.
        bus_size: Number of traces in a bus.
        pours: Number of large copper areas.
        pour_nodes: Side of a copper area in grid nodes.
        run_length: Straight run between two 45-degree bends, in grid steps.
        max_trace_steps: Longest trace, in grid steps.
        clearance: Minimum copper-to-copper gap between separate conductors.
        max_shift: Largest registration offset of tested vs template, per axis.
        edge_noise: Fraction of copper-edge pixels flipped in the tested image.
        box_margin: Margin added around a defect's changed pixels to form its box, per side.
    """

    pitch: int = 22
    trace_width: Range = (5, 9)
    pad_size: Range = (16, 28)
    square_pad_prob: float = 0.4
    via_prob: float = 0.3
    via_size: Range = (16, 22)
    via_hole_ratio: FloatRange = (0.35, 0.5)
    density: float = 0.5
    bus_prob: float = 0.2
    edge_start_prob: float = 0.3
    bus_size: Range = (2, 5)
    pours: Range = (0, 2)
    pour_nodes: Range = (2, 5)
    run_length: Range = (2, 8)
    max_trace_steps: int = 40
    clearance: int = 4
    max_shift: int = 3
    edge_noise: float = 0.03
    box_margin: Range = (2, 6)

    def __post_init__(self) -> None:
        """Reject ranges that are reversed or geometry that breaks the clearance guarantee."""
        for name in (
            "trace_width",
            "pad_size",
            "via_size",
            "via_hole_ratio",
            "bus_size",
            "pours",
            "pour_nodes",
            "run_length",
            "box_margin",
        ):
            lo, hi = getattr(self, name)
            if lo > hi or lo < 0:
                raise ValueError(f"SynthStyle.{name} must be a range 0 <= lo <= hi, got {(lo, hi)}")
        if self.pitch < 12 or self.clearance < 1 or self.trace_width[0] < 2 or self.run_length[0] < 1:
            raise ValueError("SynthStyle needs pitch >= 12, clearance >= 1, trace width >= 2, run >= 1")
        if self.trace_width[1] > self.pitch / math.sqrt(2) - self.clearance:
            raise ValueError("SynthStyle.trace_width too wide for pitch: diagonal neighbours would touch")
        if max(self.pad_size[1], self.via_size[1]) > self.max_terminal_size():
            limit = self.max_terminal_size()
            raise ValueError(f"SynthStyle pads/vias larger than {limit} px break the clearance")
        probs = (self.square_pad_prob, self.via_prob, self.bus_prob, self.edge_start_prob, self.density)
        if not all(0.0 <= q <= 1.0 for q in probs):
            raise ValueError("SynthStyle probabilities and density must lie in [0, 1]")
        if self.max_shift < 0 or not 0.0 <= self.edge_noise <= 0.5:
            raise ValueError("SynthStyle needs max_shift >= 0 and 0 <= edge_noise <= 0.5")

    def max_terminal_size(self) -> int:
        """Largest pad/via that keeps ``clearance`` to conductors two grid nodes away."""
        return int(2 * (2 * self.pitch - self.trace_width[1] / 2 - self.clearance))


def style_for_group(group_index: int) -> SynthStyle:
    """Deterministic style of PCB design number ``group_index``; different groups look different.

    Args:
        group_index: Non-negative design number.

    Returns:
        A valid :class:`SynthStyle`, the same for the same index on every machine.
    """
    if group_index < 0:
        raise ValueError(f"group_index must be >= 0, got {group_index}")
    rng = np.random.default_rng([0x5C8, group_index])
    pitch = int(rng.integers(19, 29))
    clearance = int(rng.integers(3, 6))
    w_cap = int(pitch / math.sqrt(2) - clearance)
    w_lo = int(rng.integers(4, min(7, w_cap) + 1))
    w_hi = int(min(w_cap, w_lo + rng.integers(0, 5)))
    t_cap = int(2 * (2 * pitch - w_hi / 2 - clearance))
    pad_lo = int(max(w_hi + 4, round(pitch * rng.uniform(0.7, 1.1))))
    pad_hi = int(min(t_cap, pad_lo + rng.integers(2, 12)))
    via_lo = int(max(w_hi + 4, round(pitch * rng.uniform(0.7, 0.95))))
    via_hi = int(min(t_cap, via_lo + rng.integers(0, 7)))
    run_lo = int(rng.integers(1, 4))
    return SynthStyle(
        pitch=pitch,
        trace_width=(w_lo, w_hi),
        pad_size=(pad_lo, pad_hi),
        square_pad_prob=float(rng.uniform(0.0, 0.9)),
        via_prob=float(rng.uniform(0.05, 0.5)),
        via_size=(via_lo, via_hi),
        via_hole_ratio=(0.35, float(rng.uniform(0.4, 0.55))),
        density=float(rng.uniform(0.35, 0.6)),
        bus_prob=float(rng.uniform(0.0, 0.4)),
        edge_start_prob=float(rng.uniform(0.1, 0.5)),
        bus_size=(2, int(rng.integers(3, 7))),
        pours=(0, int(rng.integers(0, 4))),
        pour_nodes=(2, int(rng.integers(3, 7))),
        run_length=(run_lo, run_lo + int(rng.integers(3, 9))),
        max_trace_steps=int(rng.integers(20, 60)),
        clearance=clearance,
        max_shift=3,
        edge_noise=float(rng.uniform(0.01, 0.05)),
    )
