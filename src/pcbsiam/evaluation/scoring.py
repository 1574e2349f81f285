"""Scoring patch pairs with each distinct reference encoded once per weight state.

A reference crop is often shared: in the paper's layout every tested board of a PCB type is compared
with the one standard board of that type, so the same reference patch appears once per tested board.
:func:`score_index` encodes each distinct reference crop once and keeps the encodings in a
:class:`ReferenceCache` tied to a fingerprint of the network's weights, so that later passes at the
same weights (an epoch's calibration and validation passes, a calibration followed by an evaluation)
reuse them, and a pass at other weights starts afresh. Where nothing is shared (DeepPCB: one
template per tested image) it is the plain pair loop.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Hashable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from pcbsiam.data.crops import PatchCropper, PatchSpec
from pcbsiam.data.datasets import PairDataset
from pcbsiam.data.protocol import PatchIndex
from pcbsiam.data.store import BoardStore
from pcbsiam.data.transforms import to_tensor
from pcbsiam.devices import autocast, unwrap
from pcbsiam.models.band import TileGate, gated_scores

__all__ = ["PairScores", "ReferenceCache", "evaluate", "pair_loader", "score_index", "weights_fingerprint"]

log = logging.getLogger(__name__)

Encoded = torch.Tensor | list[torch.Tensor]


@dataclass
class PairScores:
    """Scores of patches against their references (as the model names them), with what is known of each patch.

    Attributes:
        scores: (N,) float64 scores (L2 distances in the paper's mode, logits in others).
        labels: (N,) int64, 1 defective.
        groups: (N,) int64 PCB type indices.
    """

    scores: np.ndarray
    labels: np.ndarray
    groups: np.ndarray


def pair_loader(
    store: BoardStore, index: PatchIndex, spec: PatchSpec, batch_size: int = 64, workers: int = 0
) -> DataLoader:
    """Loader of (tested, reference, label, group) over ``index`` in order, cut as ``spec`` says."""
    return DataLoader(PairDataset(store, index, spec), batch_size=batch_size, shuffle=False, num_workers=workers)


@torch.inference_mode()
def evaluate(
    model: nn.Module,
    loader: DataLoader,
    device: torch.device,
    amp: bool = True,
    progress: Callable[[int], None] | None = None,
    gate: TileGate | None = None,
) -> PairScores:
    """Score of every tested patch against its reference (the model's ``score_pairs``).

    Args:
        model: a network with ``score_pairs`` (or a DDP wrapper of one).
        loader: yields (tested (B,1,S,S), reference (B,1,S,S), label (B,), group (B,)).
        device: where to compute.
        amp: bfloat16 autocast on CUDA.
        progress: called with the number of patches done after each batch.
        gate: pairs it skips get the model's ``null_score`` without running the network.
    """
    net = unwrap(model)
    was_training = net.training
    net.eval()
    dists, labels, groups = [], [], []
    for tested, reference, label, group in loader:

        def run(keep: torch.Tensor, tested: torch.Tensor = tested, reference: torch.Tensor = reference) -> torch.Tensor:
            with autocast(device, amp):
                t, r = tested[keep].to(device, non_blocking=True), reference[keep].to(device, non_blocking=True)
                return net.score_pairs(t, r)

        scores = gated_scores(gate, tested, reference, run, net.null_score)
        dists.append(scores.float().cpu().double().numpy())
        labels.append(np.asarray(label))
        groups.append(np.asarray(group))
        if progress is not None:
            progress(len(label))
    net.train(was_training)
    if not dists:
        return PairScores(np.zeros(0), np.zeros(0, np.int64), np.zeros(0, np.int64))
    cat = np.concatenate
    return PairScores(cat(dists), cat(labels).astype(np.int64), cat(groups).astype(np.int64))


def weights_fingerprint(model: nn.Module) -> str:
    """A digest of every parameter and buffer of ``model`` but the decision threshold, which no
    encoding depends on (equal digests: equal encodings)."""
    h = hashlib.blake2b(digest_size=16)
    for name, value in unwrap(model).state_dict().items():
        if name == "threshold":
            continue
        h.update(name.encode())
        h.update(str(value.dtype).encode())
        h.update(value.detach().reshape(-1).cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


class ReferenceCache:
    """Encoded references of one weight state, keyed by the pixels they were cut from.

    Args:
        max_items: forget the oldest encodings beyond this many (the diff mode's per-stage maps are
            large).
    """

    def __init__(self, max_items: int = 4096) -> None:
        self.max_items = max_items
        self.fingerprint: str | None = None
        self._items: dict[Hashable, Encoded] = {}
        self.hits = 0
        self.encoded = 0

    def __len__(self) -> int:
        return len(self._items)

    def bind(self, model: nn.Module) -> None:
        """Tie the cache to ``model``'s current weights, emptying it if they changed."""
        fp = weights_fingerprint(model)
        if fp != self.fingerprint:
            self._items.clear()
            self.fingerprint = fp

    def get(self, key: Hashable) -> Encoded | None:
        """The encoding stored under ``key``, if any."""
        return self._items.get(key)

    def put(self, key: Hashable, value: Encoded) -> None:
        """Store one reference's encoding (batch dimension 1)."""
        self._items[key] = value
        while len(self._items) > self.max_items:
            self._items.pop(next(iter(self._items)))


def _rows(enc: Encoded, i: int) -> Encoded:
    # clones, so that a kept row does not hold on to the whole batch
    return [e[i : i + 1].clone() for e in enc] if isinstance(enc, list) else enc[i : i + 1].clone()


def _cat(parts: list[Encoded]) -> Encoded:
    if isinstance(parts[0], list):
        return [torch.cat(level) for level in zip(*parts, strict=True)]
    return torch.cat(parts)


def _batches(n: int, size: int) -> list[np.ndarray]:
    return [np.arange(s, min(s + size, n)) for s in range(0, n, size)]


@torch.inference_mode()
def score_index(
    model: nn.Module,
    store: BoardStore,
    index: PatchIndex,
    spec: PatchSpec,
    device: torch.device,
    amp: bool = True,
    batch_size: int = 64,
    cache: ReferenceCache | None = None,
    progress: Callable[[int], None] | None = None,
) -> PairScores:
    """Scores of every patch of ``index`` against its reference crop, as :func:`evaluate`.

    Models whose ``encode`` leaves nothing to share (``encodes_references`` False),
    and indexes whose reference crops are all distinct and not in the cache, take the plain pair loop.

    Args:
        model: a :class:`pcbsiam.models.PairModel` (or a DDP wrapper of one).
        store: the decoded boards of ``index``.
        index: the patches.
        spec: the model's patch geometry (context, input size).
        device: where to compute.
        amp: bfloat16 autocast on CUDA.
        batch_size: patches per forward pass.
        cache: encodings kept between calls at equal weights; a private one when None.
        progress: called with the number of patches done after each batch.

    The model's ``model.gate`` (:class:`pcbsiam.models.band.TileGate`) skips the network on pairs the
    tolerance-band comparison finds empty; they get the model's ``null_score``.
    """
    net = unwrap(model)
    gate = TileGate.of(net.cfg, spec.patch, spec.context)
    crops = PatchCropper(store, index, spec)
    size = spec.input_size
    keys = [crops.reference_key(i) for i in range(len(index))]
    distinct = list(dict.fromkeys(keys))
    encodes = net.encodes_references
    shared, bound = len(distinct) < len(keys), False
    if encodes and cache is not None and len(cache):
        cache.bind(net)  # hashing the weights is only worth it when the cache may hold these references
        shared, bound = shared or any(cache.get(k) is not None for k in distinct), True
    if not (encodes and shared):
        loader = DataLoader(PairDataset(store, index, spec), batch_size=batch_size, shuffle=False)
        return evaluate(model, loader, device, amp, progress, gate)
    cache = cache if cache is not None else ReferenceCache()
    if not bound:
        cache.bind(net)
    cache.max_items = max(cache.max_items, len(distinct))
    was_training = net.training
    net.eval()
    first = {k: i for i, k in reversed(list(enumerate(keys)))}  # a patch showing each reference
    # this call's encodings, held here: storing new ones may push earlier hits out of the cache
    held = {k: v for k in distinct if (v := cache.get(k)) is not None}
    todo = [k for k in distinct if k not in held]
    cache.hits += len(held)
    for batch in _batches(len(todo), batch_size):
        imgs = np.stack([crops.reference(first[todo[j]]) for j in batch])
        with autocast(device, amp):
            enc = net.encode(to_tensor(imgs, size).to(device))
        for j_local, j in enumerate(batch):
            held[todo[j]] = _rows(enc, j_local)
            cache.put(todo[j], held[todo[j]])
        cache.encoded += len(batch)
    scores = []
    for batch in _batches(len(keys), batch_size):
        pairs = [crops.pair(int(i)) for i in batch]
        tested = to_tensor(np.stack([t for t, _ in pairs]), size)
        reference = to_tensor(np.stack([r for _, r in pairs]), size) if gate is not None else tested

        def run(keep: torch.Tensor, tested: torch.Tensor = tested, batch: np.ndarray = batch) -> torch.Tensor:
            ref = _cat([held[keys[i]] for i in batch[keep.numpy()]])
            with autocast(device, amp):
                return net.compare(net.encode(tested[keep].to(device)), ref)

        s = gated_scores(gate, tested, reference, run, net.null_score)
        scores.append(s.float().cpu().double().numpy())
        if progress is not None:
            progress(len(batch))
    net.train(was_training)
    rows = index.rows
    dists = np.concatenate(scores) if scores else np.zeros(0)
    return PairScores(dists, rows["label"].astype(np.int64), rows["group"].astype(np.int64))
