"""One entry point over every reader: a data root and split become items, decoded boards and patches."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from pcbsiam.data.deeppcb import read_deeppcb
from pcbsiam.data.paper import is_paper_layout, read_paper_layout
from pcbsiam.data.protocol import PatchIndex, cut_patches
from pcbsiam.data.records import BoardList
from pcbsiam.data.store import BoardStore, load_store
from pcbsiam.errors import DataError

log = logging.getLogger(__name__)


def read_boards(root: str | Path, split: str | Path = "trainval.txt", strict: bool = False) -> BoardList:
    """Read a DeepPCB layout (with ``split``) or the paper's true/false/standard layout (split unused)."""
    if is_paper_layout(root):
        return read_paper_layout(root, strict=strict)
    return read_deeppcb(root, split, strict=strict)


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
