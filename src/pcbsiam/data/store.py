"""Decode each board once and keep it in memory (optionally memory-mapped from a cache file)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pcbsiam.data.images import load_gray
from pcbsiam.data.records import BoardList, BoardPair, check_boxes
from pcbsiam.errors import DataError
from pcbsiam.io import atomic_path

log = logging.getLogger(__name__)


@dataclass
class BoardStore:
    """Decoded boards, one tested image and one reference per item.

    Attributes:
        pairs: the items, in order; ``tested[i]`` and ``reference[i]`` belong to ``pairs[i]``.
        tested: per item a (H, W) uint8 array.
        reference: per item a (H, W) uint8 array of the same shape as ``tested[i]``.
        skipped: items that could not be decoded or checked, and those the reader skipped.
        shifts: (n, 2) int (dy, dx) of each tested image relative to its reference once
            :func:`register_store` ran (``tested[y, x] ~ reference[y - dy, x - dx]``), else None.
        local_shift: px of per-patch refinement on top of ``shifts`` (``data.local_shift``); 0 = none.
    """

    pairs: list[BoardPair]
    tested: list[np.ndarray]
    reference: list[np.ndarray]
    skipped: list[DataError] = field(default_factory=list)
    shifts: np.ndarray | None = None
    local_shift: int = 0

    def __len__(self) -> int:
        return len(self.pairs)

    @property
    def groups(self) -> list[str]:
        """Sorted distinct PCB types."""
        return sorted({p.group for p in self.pairs})

    def shape(self, i: int) -> tuple[int, int]:
        """(H, W) of item ``i``."""
        return self.tested[i].shape  # type: ignore[return-value]

    def subset(self, indices: list[int] | np.ndarray) -> BoardStore:
        """A store over the items at ``indices`` (arrays are shared, not copied)."""
        idx = [int(i) for i in indices]
        return BoardStore(
            [self.pairs[i] for i in idx],
            [self.tested[i] for i in idx],
            [self.reference[i] for i in idx],
            shifts=None if self.shifts is None else self.shifts[idx],
            local_shift=self.local_shift,
        )


def _decode(pair: BoardPair, ref_cache: dict[Path, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    tested = load_gray(pair.tested)
    reference = ref_cache.get(pair.template)
    if reference is None:
        reference = load_gray(pair.template)
    if reference.shape != tested.shape:
        raise DataError(
            pair.template,
            f"reference is {reference.shape[1]}x{reference.shape[0]} px but tested image {pair.tested.name} "
            f"is {tested.shape[1]}x{tested.shape[0]} px; they must be the same size",
        )
    check_boxes(pair.boxes, tested.shape[1], tested.shape[0], pair.tested)
    return tested, reference


def _cache_key(pairs: list[BoardPair]) -> str:
    h = hashlib.sha1()
    for p in pairs:
        for f in (p.tested, p.template):
            st = f.stat()
            h.update(f"{f.resolve()}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def load_store(
    boards: BoardList,
    cache_dir: str | Path | None = None,
    workers: int = 2,
    progress: Callable[[int, int], None] | None = None,
) -> BoardStore:
    """Decode every item of ``boards``; bad ones are skipped and listed in ``skipped``.

    Args:
        boards: what a reader returned.
        cache_dir: if given, the decoded boards are saved there once (``boards-<hash>.npy``) and
            memory-mapped on later calls, so repeated runs skip JPEG decoding.
        workers: decoding threads (Pillow releases the GIL while decoding).
        progress: called with (done, total) as items are decoded.
    """
    pairs = boards.pairs
    skipped = list(boards.skipped)
    if cache_dir is not None and pairs:
        cached = _load_cache(Path(cache_dir), pairs)
        if cached is not None:
            return BoardStore(pairs, list(cached[:, 0]), list(cached[:, 1]), skipped)
    refs: dict[Path, np.ndarray] = {}
    repeated = [t for t, n in Counter(p.template for p in pairs).items() if n > 1]
    for t in repeated:  # a standard board shared by many images is decoded once
        with contextlib.suppress(DataError):  # a bad reference is reported per item below
            refs[t] = load_gray(t)
    ok_pairs, tested, reference = [], [], []

    def job(p: BoardPair) -> tuple[np.ndarray, np.ndarray] | DataError:
        try:
            return _decode(p, refs)
        except DataError as err:
            return err

    with ThreadPoolExecutor(max(1, workers)) as pool:
        for n, (pair, res) in enumerate(zip(pairs, pool.map(job, pairs), strict=True), 1):
            if isinstance(res, DataError):
                skipped.append(res)
            else:
                ok_pairs.append(pair)
                tested.append(res[0])
                reference.append(res[1])
            if progress is not None:
                progress(n, len(pairs))
    store = BoardStore(ok_pairs, tested, reference, skipped)
    if cache_dir is not None and ok_pairs and not skipped:
        _save_cache(Path(cache_dir), store)
    return store


def _cache_file(cache_dir: Path, pairs: list[BoardPair]) -> Path:
    return cache_dir / f"boards-{_cache_key(pairs)}.npy"


def _load_cache(cache_dir: Path, pairs: list[BoardPair]) -> np.ndarray | None:
    path = _cache_file(cache_dir, pairs)
    if not path.is_file():
        return None
    arr = np.load(path, mmap_mode="r")
    if arr.ndim != 4 or arr.shape[0] != len(pairs) or arr.shape[1] != 2:
        return None
    log.info("memory-mapped %d decoded boards from %s", len(pairs), path)
    return arr


def _save_cache(cache_dir: Path, store: BoardStore) -> None:
    shapes = {a.shape for a in store.tested}
    if len(shapes) != 1:  # boards of several sizes stay in memory only
        return
    path = _cache_file(cache_dir, store.pairs)
    arr = np.stack([np.stack([t, r]) for t, r in zip(store.tested, store.reference, strict=True)])
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.save(fh, arr)
    (cache_dir / f"{path.stem}.json").write_text(json.dumps([str(p.tested) for p in store.pairs]))


def register_store(store: BoardStore, max_shift: int = 16, local_shift: int = 0) -> BoardStore:
    """Estimate every board's global shift against its reference (0, 0 where none is reliable).

    Sets and returns ``store`` with ``store.shifts`` (n, 2) and ``store.local_shift``: patches then
    refine their reference crop by up to that many px (:class:`pcbsiam.data.datasets.PatchCropper`).
    """
    from pcbsiam.data.registration import estimate_shift
    from pcbsiam.errors import RegistrationError

    shifts = np.zeros((len(store), 2), dtype=np.int64)
    for i in range(len(store)):
        try:
            s = estimate_shift(np.asarray(store.tested[i]), np.asarray(store.reference[i]), max_shift=max_shift)
            shifts[i] = (s.dy, s.dx)
        except RegistrationError as exc:
            log.warning("%s: not registered (%s)", store.pairs[i].name, exc)
    store.shifts = shifts
    store.local_shift = local_shift
    return store
