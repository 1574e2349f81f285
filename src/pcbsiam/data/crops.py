"""The patch geometry of a model (:class:`PatchSpec`) and the one cropper of tested and reference patches.

Training, evaluation, inspection, the service and export all cut their crops here, so a model sees at
inspection exactly what it saw in training.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

from pcbsiam.data.protocol import PatchIndex
from pcbsiam.data.store import BoardStore
from pcbsiam.data.transforms import context_box, crop, crop_pair, registered_boxes


@dataclass(frozen=True)
class PatchSpec:
    """How boards become network inputs, resolved once from the config and carried with the model.

    Attributes:
        patch: side of a protocol patch / inspection tile in board px (``data.patch``).
        stride: grid step of the protocol's patches (``data.stride``; None: ``patch``).
        context: px of surroundings shown around each patch (``data.context``); the label and the
            verdict stay the patch's.
        input_size: side S of the network's input; crops of ``patch + 2 * context`` px are resized to it.
        register: whether each board is aligned to its reference by a global shift (``data.register``).
        local_shift: with ``register``, each reference crop moves by up to this many px more to the
            best match (``data.local_shift``).
    """

    patch: int = 128
    stride: int | None = None
    context: int = 0
    input_size: int = 128
    register: bool = False
    local_shift: int = 0

    @classmethod
    def from_config(cls, cfg: Any) -> PatchSpec:
        """The spec of a :class:`pcbsiam.config.Config`."""
        d = cfg.data
        return cls(d.patch, d.stride, d.context, cfg.model.input_size, d.register, d.local_shift)

    @property
    def crop_size(self) -> int:
        """Side of a crop in board px before resizing: ``patch + 2 * context``."""
        return self.patch + 2 * self.context

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (bundles, reports)."""
        return asdict(self)

    def to_metadata(self) -> dict[str, str]:
        """String values for ONNX metadata (``None`` stride as an empty string)."""
        return {k: "" if v is None else str(v) for k, v in asdict(self).items()}

    @classmethod
    def from_metadata(cls, meta: dict[str, str]) -> PatchSpec:
        """Inverse of :meth:`to_metadata`; missing keys keep their defaults."""
        kinds = {f.name: f.default for f in fields(cls)}
        out: dict[str, Any] = {}
        for name, default in kinds.items():
            if name not in meta:
                continue
            raw = meta[name]
            if isinstance(default, bool):
                out[name] = raw == "True"
            else:
                out[name] = int(raw) if raw != "" else None
        return cls(**out)


class PatchCropper:
    """Crops tested and reference patches of a PatchIndex out of a BoardStore.

    Args:
        store: the decoded boards; when registered, reference crops follow each board's global shift
            and, with ``store.local_shift`` = k > 0, a per-patch refinement of up to k px.
        index: the patches.
        spec: the model's patch geometry; its ``context`` px are added on each side of every crop:
            a patch of h x w gives (h + 2c) x (w + 2c) crops, the patch in their centre.
    """

    def __init__(self, store: BoardStore, index: PatchIndex, spec: PatchSpec) -> None:
        if spec.context < 0:
            raise ValueError(f"context must be >= 0 px, got {spec.context}")
        self.store = store
        self.index = index
        self.spec = spec
        self.context = spec.context
        self.shifts = store.shifts  # (n_boards, 2) tested-vs-reference offsets when registered
        self.local_shift = store.local_shift
        self._reference_boxes: dict[int, tuple[int, int, int, int]] = {}
        self._board_patches: dict[int, np.ndarray] | None = None
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
        if i not in self._reference_boxes:  # the local refinement searches once, for all the board's patches
            b = int(self.index.rows[i]["board"])
            patches = self._patches_of(b)
            boxes = registered_boxes(
                self.store.tested[b],
                self.store.reference[b],
                [self._box(int(j)) for j in patches],
                self.shifts[b],
                self.local_shift,
            )
            for j, box in zip(patches, boxes, strict=True):
                self._reference_boxes[int(j)] = tuple(int(v) for v in box)
        return self._reference_boxes[i]

    def _patches_of(self, board: int) -> np.ndarray:
        """Indices of the patches of ``board``, in index order."""
        if self._board_patches is None:
            boards = self.index.rows["board"]
            order = np.argsort(boards, kind="stable")
            starts = np.flatnonzero(np.r_[True, boards[order][1:] != boards[order][:-1]])
            self._board_patches = {
                int(boards[order[s]]): part for s, part in zip(starts, np.split(order, starts[1:]), strict=True)
            }
        return self._board_patches[board]

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
