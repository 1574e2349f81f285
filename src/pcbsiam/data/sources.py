"""One entry point over every reader: a data root and split become items, decoded boards and patches."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pcbsiam.data.deeppcb import read_deeppcb
from pcbsiam.data.paper import is_paper_layout, read_paper_layout
from pcbsiam.data.protocol import PatchIndex, cut_patches
from pcbsiam.data.records import SYNTHETIC_MARKER, BoardList
from pcbsiam.data.store import BoardStore, load_store
from pcbsiam.errors import DataError

log = logging.getLogger(__name__)


def read_boards(root: str | Path, split: str | Path = "trainval.txt", strict: bool = False) -> BoardList:
    """Read a DeepPCB layout (with ``split``) or the paper's true/false/standard layout (split unused)."""
    if is_paper_layout(root):
        return read_paper_layout(root, strict=strict)
    return read_deeppcb(root, split, strict=strict)


def describe_data(root: str | Path, split: str | Path = "trainval.txt") -> dict[str, Any]:
    """What a data set is, to be recorded with the models trained on it (``pcbsiam info``).

    The fingerprint hashes every readable item's name with the sizes of its two image files, so two data
    sets that share item names (synthetic boards are named like DeepPCB's) still differ, while a copy of
    the same files elsewhere matches.

    Returns:
        ``root`` (absolute), ``layout`` (``deeppcb`` or ``paper``), ``synthetic`` (written by
        ``pcbsiam data synth``), ``split``, ``items``, ``groups`` and ``fingerprint`` (16 hex digits).
    """
    root = Path(root)
    boards = read_boards(root, split)
    h = hashlib.sha256()
    for p in sorted(boards.pairs, key=lambda p: p.name):
        sizes = [f.stat().st_size if f.is_file() else -1 for f in (p.tested, p.template)]
        h.update(f"{p.name}:{sizes[0]}:{sizes[1]};".encode())
    paper = is_paper_layout(root)
    return {
        "root": str(root.resolve()),
        "layout": "paper" if paper else "deeppcb",
        "synthetic": (root / SYNTHETIC_MARKER).is_file(),
        "split": None if paper else Path(split).name,
        "items": len(boards.pairs),
        "groups": boards.groups,
        "fingerprint": h.hexdigest()[:16],
    }


def same_data(recorded: dict[str, Any] | None, root: str | Path, split: str | Path = "trainval.txt") -> bool | None:
    """Whether ``root``/``split`` holds the data described by ``recorded`` (:func:`describe_data`); None when
    nothing was recorded (models older than the record)."""
    if not recorded or "fingerprint" not in recorded:
        return None
    return describe_data(root, split)["fingerprint"] == recorded["fingerprint"]


def no_readable_items(where: str | Path, source: str, skipped: list) -> DataError:
    """The error of a split (or folder) whose every item was skipped: how many, and why the first was."""
    first = f"; the first: {skipped[0]}" if skipped else ""
    return DataError(where, f"{source} has no readable item ({len(skipped)} skipped{first})")


@dataclass
class PatchData:
    """Decoded boards and the patches cut from them."""

    store: BoardStore
    index: PatchIndex


def patches_of(
    store: BoardStore, patch: int = 128, stride: int | None = None, groups: list[str] | None = None
) -> PatchIndex:
    """Cut the protocol's patches from every board of ``store``."""
    return cut_patches(store.pairs, [store.shape(i) for i in range(len(store))], patch, stride, groups=groups)


def load_patch_data(
    root: str | Path,
    split: str | Path = "trainval.txt",
    patch: int = 128,
    stride: int | None = None,
    cache_dir: str | Path | None = None,
    workers: int = 2,
) -> PatchData:
    """Read, decode and cut a data set; skipped items are logged and kept in ``store.skipped``."""
    boards = read_boards(root, split)
    store = load_store(boards, cache_dir=cache_dir, workers=workers)
    for err in store.skipped:
        log.warning("skipped %s", err)
    return PatchData(store, patches_of(store, patch, stride))
