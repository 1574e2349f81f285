"""Checkpoints: state dicts and plain config in one file, written atomically, read with weights_only."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from pcbsiam import __version__
from pcbsiam.errors import PcbsiamError
from pcbsiam.io import atomic_path

CHECKPOINT_FORMAT = "pcbsiam-checkpoint"
CHECKPOINT_VERSION = 1


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` (state dicts, plain values) with format tags, atomically."""
    data = {"format": CHECKPOINT_FORMAT, "format_version": CHECKPOINT_VERSION, "pcbsiam_version": __version__}
    data.update(payload)
    with atomic_path(path) as tmp:
        torch.save(data, tmp)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (``weights_only=True``).

    Raises:
        PcbsiamError: missing file, not a pcbsiam checkpoint, or a newer format.
    """
    path = Path(path)
    if not path.is_file():
        raise PcbsiamError(f"checkpoint {path} not found")
    try:
        data = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure is a bad file for the user
        raise PcbsiamError(f"{path} cannot be read as a pcbsiam checkpoint: {exc}") from exc
    if not isinstance(data, dict) or data.get("format") != CHECKPOINT_FORMAT:
        raise PcbsiamError(f"{path} is not a pcbsiam training checkpoint")
    if int(data.get("format_version", 0)) > CHECKPOINT_VERSION:
        raise PcbsiamError(
            f"{path} was written by pcbsiam {data.get('pcbsiam_version')} in a newer format "
            f"({data['format_version']} > {CHECKPOINT_VERSION}); upgrade pcbsiam"
        )
    return data
