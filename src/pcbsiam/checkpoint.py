"""Tagged torch files: state dicts and plain values in one file with a format tag and version, written
atomically and read with ``weights_only=True``. Training checkpoints use them directly; model bundles
(:mod:`pcbsiam.deploy.bundle`) are tagged files of their own format."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from pcbsiam import __version__
from pcbsiam.errors import PcbsiamError
from pcbsiam.io import atomic_path

CHECKPOINT_FORMAT = "pcbsiam-checkpoint"
CHECKPOINT_VERSION = 1


def save_tagged(path: str | Path, fmt: str, version: int, payload: dict[str, Any]) -> Path:
    """Write ``payload`` (state dicts, plain values) under the tags ``fmt`` / ``version``, atomically."""
    data = {"format": fmt, "format_version": version, "pcbsiam_version": __version__}
    data.update(payload)
    with atomic_path(path) as tmp:
        torch.save(data, tmp)
    return Path(path)


def load_tagged(
    path: str | Path,
    fmt: str,
    version: int,
    what: str,
    map_location: str | torch.device = "cpu",
    exact: bool = False,
    remedy: str = "upgrade pcbsiam",
) -> dict[str, Any]:
    """Read a file written by :func:`save_tagged` with ``weights_only=True`` and check its tags.

    Args:
        path: the file.
        fmt: the format tag it must carry.
        version: the format version this pcbsiam writes.
        what: the kind of file, for messages ("training checkpoint", "bundle").
        map_location: where tensors go.
        exact: refuse other versions (default: refuse newer ones only).
        remedy: what the user should do about a refused version.

    Raises:
        PcbsiamError: missing file, unreadable, another format, or a refused version.
    """
    path = Path(path)
    if not path.is_file():
        raise PcbsiamError(f"{what} {path} not found")
    try:
        data = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure is a bad file for the user
        raise PcbsiamError(f"{path} cannot be read as a pcbsiam {what}: {_load_reason(exc)}") from exc
    tag = data.get("format") if isinstance(data, dict) else None
    if tag != fmt:
        raise PcbsiamError(f"{path} is not a pcbsiam {what} (format tag {tag!r})")
    found = int(data.get("format_version", 0))
    if found > version or (exact and found != version):
        raise PcbsiamError(
            f"{path} is a {what} of format {found} written by pcbsiam {data.get('pcbsiam_version')}; "
            f"this pcbsiam {__version__} reads format {version}: {remedy}"
        )
    return data


def _load_reason(exc: Exception) -> str:
    """torch's reason for refusing a file, in one line, never its advice to load it unsafely.

    A safe load refuses pickled objects other than tensors and plain values, and torch's message then
    suggests ``weights_only=False``, which would run whatever code the file carries: that advice is
    never passed on, the first line of any other reason is.
    """
    text = str(exc)
    if "weights_only" in text:
        if "Unsupported global" in text:
            return (
                "it holds objects a safe load refuses (not only tensors and plain values), "
                "so it is not a pcbsiam file or it was tampered with"
            )
        return "it is not a file a safe load can read (damaged, or not a pcbsiam file)"
    if isinstance(exc, EOFError):
        return "the file ends early (empty or cut short)"
    return next((line.strip() for line in text.splitlines() if line.strip()), type(exc).__name__)


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> None:
    """Write a training checkpoint (state dicts, plain values), atomically."""
    save_tagged(path, CHECKPOINT_FORMAT, CHECKPOINT_VERSION, payload)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (``weights_only=True``).

    Raises:
        PcbsiamError: missing file, not a pcbsiam checkpoint, or a newer format.
    """
    return load_tagged(path, CHECKPOINT_FORMAT, CHECKPOINT_VERSION, "training checkpoint", map_location)
