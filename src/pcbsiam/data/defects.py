"""Defect type codes shared by DeepPCB, the synthetic generator and the reports."""

from __future__ import annotations

#: DeepPCB type codes (annotation column 5) -> names. 0 means "no defect".
DEFECT_TYPES: dict[int, str] = {
    1: "open",
    2: "short",
    3: "mousebite",
    4: "spur",
    5: "spurious_copper",
    6: "pin_hole",
}

DEFECT_CODES: dict[str, int] = {name: code for code, name in DEFECT_TYPES.items()}


def defect_name(code: int) -> str:
    """Name of a defect code; ``"none"`` for 0."""
    return "none" if code == 0 else DEFECT_TYPES[int(code)]
