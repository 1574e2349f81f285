"""PyTorch datasets over a BoardStore and a PatchIndex: patch pairs for evaluation, triplets and pairs for training."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from pcbsiam.data.crops import PatchCropper, PatchSpec
from pcbsiam.data.protocol import PatchIndex
from pcbsiam.data.store import BoardStore
from pcbsiam.data.transforms import apply_dihedral, random_dihedral, random_photometric, to_tensor


class PairDataset(Dataset):
    """(tested, reference, label, group) per patch, for evaluation and calibration.

    Items: tested (1, S, S) float32, reference (1, S, S) float32, label int64, group int64.
    """

    def __init__(self, store: BoardStore, index: PatchIndex, spec: PatchSpec) -> None:
        self.crops = PatchCropper(store, index, spec)
        self.index = index
        self.size = spec.input_size

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, int, int]:
        r = self.index.rows[i]
        tested, reference = self.crops.pair(i)
        t = to_tensor(tested[None], self.size)[0]
        ref = to_tensor(reference[None], self.size)[0]
        return t, ref, int(r["label"]), int(r["group"])


class TripletDataset(Dataset):
    """The sampler's triplets as image stacks, for training.

    Items: images (3, 1, S, S) float32 in order anchor, positive, negative; labels (3,) int64;
    groups (3,) int64. With ``augment`` each image gets a random flip/quarter turn, with ``photometric``
    its own rendering (:func:`~pcbsiam.data.transforms.random_photometric`), drawn from ``seed`` and the
    item number so that a resumed run sees the same augmentation.
    """

    def __init__(
        self,
        store: BoardStore,
        index: PatchIndex,
        triplets: np.ndarray,
        spec: PatchSpec,
        augment: bool = False,
        seed: int = 0,
        photometric: bool = False,
    ) -> None:
        self.crops = PatchCropper(store, index, spec)
        self.index = index
        self.triplets = triplets
        self.size = spec.input_size
        self.augment = augment
        self.photometric = photometric
        self.seed = seed

    def __len__(self) -> int:
        return len(self.triplets)

    def __getitem__(self, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        ids = self.triplets[k]
        patches = [self.crops.tested(int(i)) for i in ids]
        rng = np.random.default_rng([self.seed, k])
        if self.augment:
            patches = [apply_dihedral(p, *random_dihedral(rng)) for p in patches]
        if self.photometric:
            patches = [random_photometric(p, rng) for p in patches]
        rows = self.index.rows[ids]
        return (
            to_tensor(patches, self.size),
            torch.as_tensor(rows["label"].astype(np.int64)),
            torch.as_tensor(rows["group"].astype(np.int64)),
        )


class PairTrainDataset(Dataset):
    """(tested, reference, label) pairs for the reference-aware mode, with joint augmentation.

    Items: tested (1, S, S), reference (1, S, S), label (scalar int64). With ``augment`` both
    patches get the same random flip/quarter turn and the reference is moved by up to
    ``ref_shift`` px, imitating registration error; with ``photometric`` each of the two gets its own
    rendering (contrast, grey level, blur, JPEG quality: :func:`~pcbsiam.data.transforms.random_photometric`),
    as two scans differ; draws come from ``seed`` and the item number.
    """

    def __init__(
        self,
        store: BoardStore,
        index: PatchIndex,
        items: np.ndarray,
        spec: PatchSpec,
        augment: bool = False,
        ref_shift: int = 0,
        seed: int = 0,
        photometric: bool = False,
    ) -> None:
        self.crops = PatchCropper(store, index, spec)
        self.index = index
        self.items = items
        self.size = spec.input_size
        self.augment = augment
        self.ref_shift = ref_shift
        self.photometric = photometric
        self.seed = seed

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        i = int(self.items[k])
        rng = np.random.default_rng([self.seed, k])
        dy, dx = rng.integers(-self.ref_shift, self.ref_shift + 1, 2) if self.ref_shift else (0, 0)
        tested, reference = self.crops.pair(i, int(dy), int(dx))
        if self.augment:
            turns, flip = random_dihedral(rng)
            tested, reference = apply_dihedral(tested, turns, flip), apply_dihedral(reference, turns, flip)
        if self.photometric:
            tested, reference = random_photometric(tested, rng), random_photometric(reference, rng)
        label = torch.as_tensor(int(self.index.rows[i]["label"]), dtype=torch.int64)
        return to_tensor(tested[None], self.size)[0], to_tensor(reference[None], self.size)[0], label


def sample_pairs(labels: np.ndarray, n: int, seed: int = 0, defective_share: float = 0.5) -> np.ndarray:
    """``n`` patch indices drawn with replacement, ``defective_share`` of them defective.

    Returns:
        (n,) int64, shuffled; deterministic for ``seed``.
    """
    rng = np.random.default_rng(seed)
    pos, neg = np.flatnonzero(labels == 1), np.flatnonzero(labels == 0)
    if len(pos) == 0 or len(neg) == 0:
        raise ValueError(f"pairs need both classes; found {len(pos)} defective and {len(neg)} defect-free patches")
    n_pos = int(round(n * defective_share))
    items = np.concatenate([rng.choice(pos, n_pos), rng.choice(neg, n - n_pos)])
    return rng.permutation(items).astype(np.int64)
