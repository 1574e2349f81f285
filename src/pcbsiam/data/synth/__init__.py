"""Synthetic DeepPCB-like board pairs: a defect-free template and a tested image with annotated defects.

Boards are routed on a coarse grid so that separate conductors always keep a clearance: traces run in
the eight 45-degree directions, start and end on round/square pads or vias, may run off the image edge
like crops of a larger board, and share the board with bus fan-outs and chamfered copper areas. Copper is
white (255) on black (0), as in the binarised DeepPCB scans.

Defects (DeepPCB codes, see :data:`pcbsiam.data.defects.DEFECT_TYPES`) are painted into a copy of the
template, each inside its own loose box; boxes never overlap. The tested image is then shifted by a
small registration offset and receives a little noise on copper edges only.

Modules:
    style: :class:`SynthStyle`, the deterministic style of each design group and the pixel values.
    layout: the grid router that lays out and renders a defect-free board.
    inject: defect painters and the placement of non-overlapping defect boxes.
    generate: :class:`SyntheticPair` and :func:`generate_pair` (layout, defects, shift, edge noise).
    writer: :func:`write_dataset`, the DeepPCB directory layout on disk.
"""

from pcbsiam.data.synth.generate import SyntheticPair, copper_edges, generate_pair
from pcbsiam.data.synth.style import BACKGROUND, COPPER, SynthStyle, style_for_group
from pcbsiam.data.synth.writer import group_id, write_dataset

__all__ = [
    "BACKGROUND",
    "COPPER",
    "SynthStyle",
    "SyntheticPair",
    "copper_edges",
    "generate_pair",
    "group_id",
    "style_for_group",
    "write_dataset",
]
