"""PyTorch datasets over a BoardStore and a PatchIndex: patch pairs for evaluation, triplets for training."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from pcbsiam.data.protocol import PatchIndex
from pcbsiam.data.store import BoardStore
from pcbsiam.data.transforms import (
    apply_dihedral,
    context_box,
    crop,
    crop_pair,
    random_dihedral,
    registered_box,
    to_tensor,
)


class PatchCropper:
    """Crops tested and reference patches of a PatchIndex out of a BoardStore.

    Args:
        store: the decoded boards; when registered, reference crops follow each board's global shift
            and, with ``store.local_shift`` = k > 0, a per-patch refinement of up to k px.
        index: the patches.
        context: px of surroundings added on each side of every crop (``data.context``): a patch of
            h x w gives (h + 2c) x (w + 2c) crops, the patch in their centre.
    """

    def __init__(self, store: BoardStore, index: PatchIndex, context: int = 0) -> None:
        if context < 0:
            raise ValueError(f"context must be >= 0 px, got {context}")
        self.store = store
        self.index = index
        self.context = context
        self.shifts = store.shifts  # (n_boards, 2) tested-vs-reference offsets when registered
        self.local_shift = store.local_shift
        self._reference_boxes: dict[int, tuple[int, int, int, int]] = {}
        self._fill: dict[int, int] = {}

    def _box(self, i: int) -> tuple[int, int, int, int]:
        r = self.index.rows[i]
        return context_box(int(r["y"]), int(r["x"]), int(r["h"]), int(r["w"]), self.context)

    def fill(self, board: int) -> int:
        """Padding of both crops of ``board``: its reference's median (the board's background)."""
        if board not in self._fill:
            self._fill[board] = int(np.median(self.store.reference[board]))
        return self._fill[board]

    def tested(self, i: int) -> np.ndarray:
        """(h + 2c, w + 2c) uint8 tested crop of patch ``i`` alone, padded with the image's median."""
        return crop(self.store.tested[int(self.index.rows[i]["board"])], *self._box(i), fill=None)

    def reference_box(self, i: int) -> tuple[int, int, int, int]:
        """(y, x, h, w) of patch ``i``'s reference crop in its reference image (following the global
        shift and the local refinement, context included)."""
        if self.shifts is None:
            return self._box(i)
        if i not in self._reference_boxes:  # the local refinement searches: once per patch
            b = int(self.index.rows[i]["board"])
            self._reference_boxes[i] = registered_box(
                self.store.tested[b], self.store.reference[b], self._box(i), self.shifts[b], self.local_shift
            )
        return self._reference_boxes[i]

    def reference_key(self, i: int) -> tuple[str, int, int, int, int]:
        """What identifies patch ``i``'s reference crop: its image's path and its box.

        Patches of equal keys have equal reference crops (the paper's layout compares every tested
        board of a type with one standard board).
        """
        return (str(self.store.pairs[int(self.index.rows[i]["board"])].template), *self.reference_box(i))

    def reference(self, i: int, dy: int = 0, dx: int = 0) -> np.ndarray:
        """(h + 2c, w + 2c) uint8 reference crop of patch ``i``, optionally moved by (dy, dx).

        When the boards were registered, the crop follows the board's shift, so it shows what the
        tested crop should show (``tested[y, x] ~ reference[y - sy, x - sx]``).
        """
        b = int(self.index.rows[i]["board"])
        y, x, h, w = self.reference_box(i)
        return crop(self.store.reference[b], y + dy, x + dx, h, w, fill=self.fill(b))

    def pair(self, i: int, dy: int = 0, dx: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Tested and reference crops of patch ``i`` (reference moved by (dy, dx)) that agree where
        either image has nothing to show (:func:`pcbsiam.data.transforms.crop_pair`); the reference
        crop equals :meth:`reference`."""
        b = int(self.index.rows[i]["board"])
        y, x, h, w = self.reference_box(i)
        return crop_pair(
            self.store.tested[b], self.store.reference[b], self._box(i), (y + dy, x + dx, h, w), self.fill(b)
        )


class PairDataset(Dataset):
    """(tested, reference, label, group) per patch, for evaluation and calibration.

    Items: tested (1, S, S) float32, reference (1, S, S) float32, label int64, group int64.
    """

    def __init__(self, store: BoardStore, index: PatchIndex, size: int, context: int = 0) -> None:
        self.crops = PatchCropper(store, index, context)
        self.index = index
        self.size = size

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
    groups (3,) int64. With ``augment`` each image gets a random flip/quarter turn, drawn from
    ``seed`` and the item number so that a resumed run sees the same augmentation.
    """

    def __init__(
        self,
        store: BoardStore,
        index: PatchIndex,
        triplets: np.ndarray,
        size: int,
        augment: bool = False,
        seed: int = 0,
        context: int = 0,
    ) -> None:
        self.crops = PatchCropper(store, index, context)
        self.index = index
        self.triplets = triplets
        self.size = size
        self.augment = augment
        self.seed = seed

    def __len__(self) -> int:
        return len(self.triplets)

    def __getitem__(self, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        ids = self.triplets[k]
        patches = [self.crops.tested(int(i)) for i in ids]
        if self.augment:
            rng = np.random.default_rng([self.seed, k])
            patches = [apply_dihedral(p, *random_dihedral(rng)) for p in patches]
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
    ``ref_shift`` px, imitating registration error; draws come from ``seed`` and the item number.
    """

    def __init__(
        self,
        store: BoardStore,
        index: PatchIndex,
        items: np.ndarray,
        size: int,
        augment: bool = False,
        ref_shift: int = 0,
        seed: int = 0,
        context: int = 0,
    ) -> None:
        self.crops = PatchCropper(store, index, context)
        self.index = index
        self.items = items
        self.size = size
        self.augment = augment
        self.ref_shift = ref_shift
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
