"""Inspect a whole board: register it to its reference, tile it, embed, compare, decide."""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from pcbsiam.bundle import Bundle
from pcbsiam.data.protocol import grid_origins
from pcbsiam.data.transforms import context_box, crop_pair, registered_box, to_tensor
from pcbsiam.engine import autocast
from pcbsiam.errors import PcbsiamError, RegistrationError
from pcbsiam.registration import Shift, estimate_shift


@dataclass
class TileResult:
    """One tile: its place in the tested image, its distance and its verdict."""

    y: int
    x: int
    h: int
    w: int
    distance: float
    defective: bool


@dataclass
class Inspection:
    """The verdict on a board.

    Attributes:
        defective: True when any tile is above the threshold.
        threshold: the bundle's threshold.
        shift: (dy, dx) of the tested image relative to the reference, and the match score.
        tiles: every tile's result.
        size: (H, W) of the tested image.
        seconds: time taken.
        score_name: what the tile scores are: ``L2 distance`` (paper's mode) or a defect logit.
    """

    defective: bool
    threshold: float
    shift: dict
    tiles: list[TileResult] = field(default_factory=list)
    size: tuple[int, int] = (0, 0)
    seconds: float = 0.0
    score_name: str = "L2 distance"

    @property
    def max_distance(self) -> float:
        """Largest tile distance."""
        return max((t.distance for t in self.tiles), default=0.0)

    def to_dict(self) -> dict:
        """Plain JSON-able dict."""
        d = asdict(self)
        d["verdict"] = "defective" if self.defective else "pass"
        d["max_distance"] = self.max_distance
        d["defective_tiles"] = sum(t.defective for t in self.tiles)
        return d


def tile_grid(height: int, width: int, tile: int, overlap: float = 0.0) -> np.ndarray:
    """Tiles covering an image, the last row and column flush with its border.

    Args:
        overlap: share of a tile shared with its neighbour, in [0, 1).

    Returns:
        (M, 4) int rows y, x, h, w.
    """
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    if height < tile or width < tile:
        raise PcbsiamError(f"image of {width}x{height} px is smaller than one {tile} px tile")
    stride = max(1, int(round(tile * (1.0 - overlap))))

    def starts(n: int) -> list[int]:
        s = grid_origins(n, tile, stride)
        return s if s[-1] == n - tile else [*s, n - tile]

    return np.array([(y, x, tile, tile) for y in starts(height) for x in starts(width)], dtype=np.int64)


class Inspector:
    """Inspects boards with a calibrated bundle; reference embeddings are computed once and cached.

    Args:
        bundle: the calibrated model.
        device: where to run the network.
        overlap: tile overlap share.
        max_shift: largest registration offset searched and accepted, in px.
        batch_size: tiles embedded per forward pass.
        cache_size: number of (board, shift) reference embeddings kept.
    """

    def __init__(
        self,
        bundle: Bundle,
        device: str | torch.device = "cpu",
        overlap: float = 0.0,
        max_shift: int = 16,
        batch_size: int = 32,
        cache_size: int = 32,
    ) -> None:
        if np.isnan(bundle.threshold):
            raise PcbsiamError("the model has no threshold: run `pcbsiam calibrate` to make a bundle first")
        self.bundle = bundle
        self.device = torch.device(device)
        self.model = bundle.model.to(self.device).eval()
        self.tile = bundle.cfg.data.patch
        self.context = bundle.cfg.data.context
        self.local_shift = bundle.cfg.data.local_shift  # the config allows it only with data.register
        self.size = bundle.cfg.model.input_size
        self.overlap = overlap
        self.max_shift = max_shift
        self.batch_size = batch_size
        self._cache: OrderedDict[tuple, torch.Tensor] = OrderedDict()
        self.cache_size = cache_size

    @torch.inference_mode()
    def encode_crops(self, crops: list[np.ndarray]) -> torch.Tensor | list[torch.Tensor]:
        """Encodings of (h, w) uint8 crops: (M, D) embeddings in the paper's mode, per-stage
        (M, C_s, H_s, W_s) feature maps in the diff mode, the patches themselves in the stack mode."""
        out = []
        for i in range(0, len(crops), self.batch_size):
            with autocast(self.device):
                out.append(self.model.encode(to_tensor(crops[i : i + self.batch_size], self.size).to(self.device)))
        if isinstance(out[0], torch.Tensor):
            return torch.cat(out).float()
        return [torch.cat(stage).float() for stage in zip(*out, strict=True)]

    def reference_embeddings(self, key: object, crops: list[np.ndarray]) -> torch.Tensor | list[torch.Tensor]:
        """Encodings of a reference's crops, cached under ``key`` (board name and crop boxes)."""
        if key is not None and key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        emb = self.encode_crops(crops)
        if key is not None:
            self._cache[key] = emb
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return emb

    def crop_tiles(
        self, tested: np.ndarray, reference: np.ndarray, tiles: np.ndarray, shift: Shift
    ) -> tuple[list[tuple[int, int, int, int]], list[np.ndarray], list[np.ndarray]]:
        """Tested and reference crops of each tile, as training cut them.

        Each tile grows by ``data.context`` px; its reference crop follows the board's shift (and the
        per-tile refinement of ``data.local_shift``); where either image has nothing to show, the two
        crops agree (:func:`pcbsiam.data.transforms.crop_pair`).

        Returns:
            (reference boxes, tested crops, reference crops).
        """
        fill = int(np.median(reference))
        boxes, tested_crops, reference_crops = [], [], []
        for tile in tiles:
            tbox = context_box(*map(int, tile), self.context)
            rbox = registered_box(tested, reference, tbox, (shift.dy, shift.dx), self.local_shift)
            t, r = crop_pair(tested, reference, tbox, rbox, fill)
            boxes.append(rbox)
            tested_crops.append(t)
            reference_crops.append(r)
        return boxes, tested_crops, reference_crops

    def register(self, tested: np.ndarray, reference: np.ndarray) -> Shift:
        """Shift of ``tested`` relative to ``reference``; a sentence if they cannot be registered."""
        if tested.shape != reference.shape:
            raise RegistrationError(
                f"tested image is {tested.shape[1]}x{tested.shape[0]} px but the reference is "
                f"{reference.shape[1]}x{reference.shape[0]} px; they must be the same size"
            )
        return estimate_shift(tested, reference, max_shift=self.max_shift)

    @torch.inference_mode()
    def inspect(self, tested: np.ndarray, reference: np.ndarray | str, register: bool = True) -> Inspection:
        """Verdict on a (H, W) uint8 tested board against a reference image or a registered board name.

        Raises:
            RegistrationError: sizes differ, or no shift within ``max_shift`` matches.
            PcbsiamError: an unknown board name, or an image smaller than a tile.
        """
        t0 = time.perf_counter()
        name = None
        if isinstance(reference, str):
            name = reference
            if name not in self.bundle.boards:
                known = ", ".join(sorted(self.bundle.boards)) or "none"
                raise PcbsiamError(f"unknown board {name!r}; registered boards: {known}")
            reference = self.bundle.boards[name]
        shift = self.register(tested, reference) if register else Shift(0, 0, 1.0)
        tiles = tile_grid(*tested.shape, self.tile, self.overlap)
        boxes, tested_crops, reference_crops = self.crop_tiles(tested, reference, tiles, shift)
        ref_emb = self.reference_embeddings(None if name is None else (name, tuple(boxes)), reference_crops)
        dist = self.model.compare(self.encode_crops(tested_crops), ref_emb).float().cpu().numpy()
        thr = self.bundle.threshold
        results = [
            TileResult(int(y), int(x), int(h), int(w), float(d), bool(d > thr))
            for (y, x, h, w), d in zip(tiles.tolist(), dist, strict=True)
        ]
        return Inspection(
            any(r.defective for r in results),
            thr,
            {"dy": shift.dy, "dx": shift.dx, "score": round(shift.score, 4)},
            results,
            (int(tested.shape[0]), int(tested.shape[1])),
            time.perf_counter() - t0,
            "L2 distance" if self.bundle.cfg.model.mode == "paper" else "defect score (logit)",
        )
