"""Inspect a whole board: register it to its reference, tile it, score each tile, decide."""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import numpy as np
import torch

from pcbsiam.data.crops import PatchCropper, PatchSpec
from pcbsiam.data.protocol import PATCH_DTYPE, PatchIndex, held_boxes, tile_grid
from pcbsiam.data.records import BoardPair
from pcbsiam.data.registration import Shift, estimate_shift
from pcbsiam.data.store import BoardStore
from pcbsiam.data.transforms import to_tensor
from pcbsiam.deploy.backends import Engine
from pcbsiam.deploy.bundle import Bundle
from pcbsiam.devices import autocast
from pcbsiam.errors import ConfigError, PcbsiamError, RegistrationError
from pcbsiam.models import Encoded
from pcbsiam.models.band import TileGate

if TYPE_CHECKING:
    from pcbsiam.detection.factory import Detector

T = TypeVar("T")


@dataclass
class TileResult:
    """One tile: its place in the tested image, its score and its verdict (``detected``: a detection made it
    defective, see ``Inspector(flag_detections=...)``)."""

    y: int
    x: int
    h: int
    w: int
    score: float
    defective: bool
    detected: bool = False


@dataclass
class Inspection:
    """The verdict on a board.

    Attributes:
        defective: True when any tile is defective (scores above the threshold, or holds a flagging detection).
        threshold: the bundle's threshold.
        shift: (dy, dx) of the tested image relative to the reference, and the match score.
        tiles: every tile's result.
        size: (H, W) of the tested image.
        seconds: time taken.
        score_name: what the tile scores are, as the model names them (``L2 distance``, ``defect score (logit)``).
        timings: seconds per stage: ``register``, ``crop`` (tiles and crops), ``gate`` (the tile gate on the
            uint8 crops, when they need no resizing), ``network`` (tensors, the gate on tensors otherwise,
            and the network), ``rest`` (threshold and results), and ``detect`` with a detector.
        scored_tiles: tiles the network scored (the others were skipped by the gate, ``model.gate``).
        detections: typed defect boxes of the inspector's detector (none without one), highest confidence
            first: ``{"box": [x1, y1, x2, y2], "type": name, "code": 1..6, "confidence": c}`` in tested-image
            pixels (x2, y2 exclusive), see :meth:`~pcbsiam.detection.records.Detections.records`. They
            change the tile verdicts only with ``Inspector(flag_detections=...)``.
    """

    defective: bool
    threshold: float
    shift: dict
    tiles: list[TileResult] = field(default_factory=list)
    size: tuple[int, int] = (0, 0)
    seconds: float = 0.0
    score_name: str = "score"
    timings: dict[str, float] = field(default_factory=dict)
    scored_tiles: int = 0
    detections: list[dict] = field(default_factory=list)

    @property
    def max_score(self) -> float:
        """Largest tile score (NaN without tiles)."""
        return max((t.score for t in self.tiles), default=float("nan"))

    def to_dict(self) -> dict:
        """Plain JSON-able dict."""
        d = asdict(self)
        d["verdict"] = "defective" if self.defective else "pass"
        d["max_score"] = self.max_score
        d["defective_tiles"] = sum(t.defective for t in self.tiles)
        return d

    def flags(self, boxes: np.ndarray) -> np.ndarray:
        """(N,) bool: whether the centre of each annotated box (rows ``x1 y1 x2 y2 [type]``) lies in a flagged tile."""
        flagged = [t for t in self.tiles if t.defective]
        return np.array(
            [
                any(t.y <= (y1 + y2) / 2 < t.y + t.h and t.x <= (x1 + x2) / 2 < t.x + t.w for t in flagged)
                for x1, y1, x2, y2, *_ in np.asarray(boxes).tolist()
            ],
            dtype=bool,
        )

    def detection_rows(self) -> np.ndarray:
        """The detections as (N, 6) float64 rows ``x1 y1 x2 y2 confidence code`` (DeepPCB result order)."""
        return np.array([[*d["box"], d["confidence"], d["code"]] for d in self.detections], dtype=np.float64).reshape(
            -1, 6
        )


@dataclass
class Prepared:
    """A board ready for the network (:meth:`Inspector.prepare`).

    Attributes:
        tested: (H, W) uint8 tested image.
        reference: (H, W) uint8 reference image.
        name: the registered board's name when the reference was given by name.
        shift: the tested image's registration onto the reference.
        tiles: (M, 4) tiles (y, x, h, w) of the tested image.
        boxes: the M reference crop boxes (y, x, h, w), context included.
        tested_crops: M (h, w) uint8 tested crops.
        reference_crops: M (h, w) uint8 reference crops.
        timings: seconds of the stages so far (``register``, ``crop``, ``gate``; ``decode`` in a stream).
        keep: (M,) bool, the tile gate's verdicts on the uint8 crops (True: the network scores the tile);
            None without a gate, or when the crops must be resized first (the gate then runs on tensors).
    """

    tested: np.ndarray
    reference: np.ndarray
    name: str | None
    shift: Shift
    tiles: np.ndarray
    boxes: list[tuple[int, int, int, int]]
    tested_crops: list[np.ndarray]
    reference_crops: list[np.ndarray]
    timings: dict[str, float]
    keep: np.ndarray | None = None


def make_inspection_detector(
    spec: str | Path | None, device: str = "cpu", engine: str | Path | None = None
) -> Detector | None:
    """The detector an inspection runs besides its tiles, by the ``--detector`` value of the commands.

    Args:
        spec: ``classical``, the path of a learned detector file (or its training folder), or ``None``
            for none.
        device: where a learned detector runs.
        engine: ``torch`` (or None), or an ONNX graph of the learned detector's verifier (``pcbsiam
            export-detector``, fp32 or int8) that ONNX Runtime runs in its place.

    Raises:
        ConfigError: ``spec`` is neither ``classical`` nor an existing path, or an engine without a learned
            detector.
        PcbsiamError: the graph was not exported from this detector's verifier.
    """
    onnx = engine is not None and str(engine) != "torch"
    if onnx and (spec is None or str(spec) == "classical"):
        raise ConfigError(
            "--detector-engine runs a learned detector's verifier: give --detector PATH (a detector file)"
        )
    if spec is None:
        return None
    from pcbsiam.detection.factory import make_detector  # loads scipy, or the learned detector's torch parts

    if str(spec) == "classical":
        return make_detector("classical")
    if not Path(spec).exists():
        raise ConfigError(
            f"detector {str(spec)!r} is neither 'classical' nor an existing file; give --detector classical or "
            "the path of a detector file written by `pcbsiam train-detector`"
        )
    detector = make_detector("learned", str(spec), str(device))
    if onnx:
        from pcbsiam.deploy.verifier import onnx_detector

        detector = onnx_detector(detector, engine)
    return detector


def check_flag_detections(value: float | None, has_detector: bool) -> None:
    """Refuse a ``flag_detections`` cut without a detector or outside [0, 1], with a sentence."""
    if value is None:
        return
    if not has_detector:
        raise PcbsiamError("flagging tiles by detections needs a detector: give --detector as well")
    if not 0.0 <= value <= 1.0:
        raise PcbsiamError(f"the detections' confidence cut must lie in [0, 1], got {value}")


def flag_by_detections(tiles: Sequence[TileResult], detections: Sequence[dict], cut: float) -> None:
    """Mark defective (and ``detected``) every tile holding at least half of the box of a detection whose
    confidence is ``cut`` or more (records as :attr:`Inspection.detections` holds them)."""
    boxes = np.array([d["box"] for d in detections if d["confidence"] >= cut], dtype=np.float64).reshape(-1, 4)
    if not len(boxes):
        return
    for t in tiles:
        if held_boxes(boxes, t.y, t.x, t.h, t.w).any():
            t.defective = t.detected = True


def overlap_stride(tile: int, overlap: float) -> int:
    """Step between tiles that share ``overlap`` (in [0, 1)) of their side with their neighbour."""
    if not 0.0 <= overlap < 1.0:
        raise PcbsiamError(f"tile overlap must be in [0, 1), got {overlap}")
    return max(1, int(round(tile * (1.0 - overlap))))


def board_tiles(height: int, width: int, tile: int, overlap: float = 0.0) -> np.ndarray:
    """Tiles covering a whole board, the last row and column flush with its border: (M, 4) y, x, h, w."""
    if height < tile or width < tile:
        raise PcbsiamError(f"image of {width}x{height} px is smaller than one {tile} px tile")
    return tile_grid(height, width, tile, overlap_stride(tile, overlap), cover=True)


#: How ``--pipeline`` values are spelt.
PIPELINE_CHOICES = ("auto", "on", "off")


def pipeline_plan(pipeline: str, engine: str, threads: int) -> tuple[bool, int]:
    """Whether a stream of boards runs as a pipeline (:meth:`Inspector.stream`), and the network's threads.

    In a pipeline one core prepares the next board (decoding, registration, crops: about 45 ms a 640 px
    board) while the network scores this one on the other cores. That pays when the network is about as
    fast as the preparation: measured on 2 cores (docs/RESULTS.md), int8 went from 10.7 to 13.9 boards/s,
    while PyTorch and ONNX fp32, whose network takes 2-3 times longer on one core, lost (6.3 -> 4.2 and
    6.4 -> 6.0). ``auto`` therefore pipelines the int8 engine only.

    Args:
        pipeline: ``auto``, ``on`` or ``off``.
        engine: ``torch``, ``onnx-fp32`` or ``onnx-int8``.
        threads: the threads the whole inspection may use.

    Returns:
        (pipelined, network threads): with the pipeline, one thread fewer for the network (at least one).
    """
    if pipeline not in PIPELINE_CHOICES:
        raise PcbsiamError(f"pipeline must be one of {', '.join(PIPELINE_CHOICES)}, got {pipeline!r}")
    on = pipeline == "on" or (pipeline == "auto" and engine == "onnx-int8")
    return on, max(1, threads - 1) if on else max(1, threads)


class Inspector:
    """Inspects boards with a calibrated bundle; encodings of a registered board's reference tiles are
    computed once and cached (for models whose references can be encoded alone).

    Args:
        bundle: the calibrated model.
        device: where to run the network.
        overlap: tile overlap share.
        max_shift: largest registration offset searched and accepted, in px.
        batch_size: tiles embedded per forward pass.
        cache_size: number of (board, crop boxes) reference encodings kept.
        engine: score tiles through this inference backend (:mod:`pcbsiam.deploy.backends`: PyTorch,
            ONNX Runtime fp32 or int8) instead of the bundle's PyTorch network; no reference cache then.
        detector: also find typed defect boxes with this detector (anything with
            ``detect(tested, template) -> Detections``, see :mod:`pcbsiam.detection.factory`), run on the
            tested image and the reference image; it does not change the tiles or the verdict...
        flag_detections: ...unless this is set: a tile holding at least half of the box of a detection with
            this confidence or more is defective too (DeepPCB-Cls's rule for a defective patch, applied to the
            detections). On DeepPCB's held-out designs the tile model or a detection at 0.99 gave 99.58 %
            accuracy and every type at least 98.58 % (the tiles alone: 99.56 %, mousebites 98.32 %;
            docs/RESULTS.md). None: the tiles' scores alone decide.

    Raises:
        PcbsiamError: the bundle has no threshold, or ``flag_detections`` is given without a detector or
            outside [0, 1].
    """

    def __init__(
        self,
        bundle: Bundle,
        device: str | torch.device = "cpu",
        overlap: float = 0.0,
        max_shift: int = 16,
        batch_size: int = 32,
        cache_size: int = 32,
        engine: Engine | None = None,
        detector: Detector | None = None,
        flag_detections: float | None = None,
    ) -> None:
        if np.isnan(bundle.threshold):
            raise PcbsiamError("the model has no threshold: run `pcbsiam calibrate` to make a bundle first")
        check_flag_detections(flag_detections, detector is not None)
        self.bundle = bundle
        self.device = torch.device(device)
        self.model = bundle.model.to(self.device).eval()
        self.overlap = overlap
        self.max_shift = max_shift
        self.batch_size = batch_size
        self._cache: OrderedDict[tuple, Encoded] = OrderedDict()
        self.cache_size = cache_size
        self.engine = engine
        self.detector = detector
        self.flag_detections = flag_detections
        self.gate = TileGate.of(bundle.model.cfg, self.spec.patch, self.spec.context)

    @property
    def spec(self) -> PatchSpec:
        """The bundle's patch geometry (tile side, context, input size, local shift)."""
        return self.bundle.spec

    @torch.inference_mode()
    def encode_crops(self, crops: list[np.ndarray]) -> Encoded:
        """Encodings of (h, w) uint8 crops, as the model's ``encode`` gives them, batch by batch."""
        out = []
        size = self.spec.input_size
        for i in range(0, len(crops), self.batch_size):
            with autocast(self.device):
                out.append(self.model.encode(to_tensor(crops[i : i + self.batch_size], size).to(self.device)))
        if isinstance(out[0], torch.Tensor):
            return torch.cat(out).float()
        return [torch.cat(stage).float() for stage in zip(*out, strict=True)]

    def reference_encodings(self, key: object, crops: list[np.ndarray]) -> Encoded:
        """Encodings of a reference's crops, cached under ``key`` (board name and crop boxes) when not None."""
        if key is not None and key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        enc = self.encode_crops(crops)
        if key is not None:
            self._cache[key] = enc
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return enc

    @torch.inference_mode()
    def score_tiles(
        self,
        tested_crops: list[np.ndarray],
        reference_crops: list[np.ndarray],
        key: object,
        keep: np.ndarray | None = None,
    ) -> tuple[np.ndarray, int]:
        """Scores (M,) of tile crop pairs, ``batch_size`` tiles at a time, so that the memory a board needs
        does not grow with its size beyond its crops and, for a registered board (``key``), its cached
        reference encodings (models that encode references alone). With the model's gate on
        (``model.gate``), tiles the tolerance-band comparison finds empty get the model's null score
        without running the network.

        Args:
            tested_crops: M (h, w) uint8 tested crops.
            reference_crops: M (h, w) uint8 reference crops.
            key: the registered board's cache key (None: nothing cached).
            keep: (M,) bool, the gate's verdicts when already known (:meth:`prepare`): only those tiles
                become tensors and go through the network.

        Returns:
            (M,) scores and the number of tiles the network scored.
        """
        size = self.spec.input_size
        shared = self.engine is None and self.model.encodes_references and key is not None
        ref_all = self.reference_encodings(key, reference_crops) if shared else None
        if keep is None:
            keep = self._gate_tensors(tested_crops, reference_crops)
        out = np.full(len(tested_crops), self.model.null_score, np.float32)
        kept = np.flatnonzero(keep)
        for s in range(0, len(kept), self.batch_size):
            rows = kept[s : s + self.batch_size]
            tested = to_tensor([tested_crops[i] for i in rows], size)
            reference = None if ref_all is not None else to_tensor([reference_crops[i] for i in rows], size)
            out[rows] = self._network(tested, reference, ref_all, torch.from_numpy(rows)).float().numpy()
        return out, len(kept)

    def _gate_tensors(self, tested_crops: Sequence[np.ndarray], reference_crops: Sequence[np.ndarray]) -> np.ndarray:
        """(M,) bool: the gate's verdicts on the crops as network inputs (crops that need resizing; every tile
        without a gate)."""
        if self.gate is None:
            return np.ones(len(tested_crops), dtype=bool)
        size, parts = self.spec.input_size, []
        for s in range(0, len(tested_crops), self.batch_size):
            part = slice(s, s + self.batch_size)
            tested, reference = to_tensor(tested_crops[part], size), to_tensor(reference_crops[part], size)
            parts.append(self.gate.keep(tested.float(), reference.float()).cpu().numpy())
        return np.concatenate(parts) if parts else np.zeros(0, dtype=bool)

    def _network(
        self, tested: torch.Tensor, reference: torch.Tensor | None, ref_all: Encoded | None, rows: torch.Tensor
    ) -> torch.Tensor:
        """(K,) scores of (K, 1, S, S) tested tiles against their reference tiles, or against rows ``rows`` of a
        board's cached reference encodings ``ref_all`` (then ``reference`` is None)."""
        if self.engine is not None:
            assert reference is not None
            return torch.from_numpy(np.asarray(self.engine.compare(tested.numpy(), reference.numpy())[0]))
        if ref_all is None:
            assert reference is not None
            with autocast(self.device):
                ref = self.model.encode(reference.to(self.device))
        else:
            ref = [r[rows] for r in ref_all] if isinstance(ref_all, list) else ref_all[rows]
        with autocast(self.device):
            return self.model.compare(self.model.encode(tested.to(self.device)), ref)

    def crop_tiles(
        self, tested: np.ndarray, reference: np.ndarray, tiles: np.ndarray, shift: Shift
    ) -> tuple[list[tuple[int, int, int, int]], list[np.ndarray], list[np.ndarray]]:
        """Tested and reference crops of each tile, cut by the same :class:`~pcbsiam.data.crops.PatchCropper`
        as in training (context, the board's shift, the per-tile refinement, agreeing padding).

        Returns:
            (reference boxes, tested crops, reference crops).
        """
        rows = np.zeros(len(tiles), dtype=PATCH_DTYPE)
        rows["y"], rows["x"], rows["h"], rows["w"] = (np.asarray(tiles)[:, k] for k in range(4))
        pair = BoardPair("board", "board", Path("tested"), Path("reference"))
        store = BoardStore(
            [pair], [tested], [reference], shifts=np.array([[shift.dy, shift.dx]]), local_shift=self.spec.local_shift
        )
        crops = PatchCropper(store, PatchIndex(rows, ["board"]), self.spec)
        pairs = [crops.pair(i) for i in range(len(tiles))]
        boxes = [crops.reference_box(i) for i in range(len(tiles))]
        return boxes, [t for t, _ in pairs], [r for _, r in pairs]

    def register(self, tested: np.ndarray, reference: np.ndarray) -> Shift:
        """Shift of ``tested`` relative to ``reference``; a sentence if they cannot be registered."""
        if tested.shape != reference.shape:
            raise RegistrationError(
                f"tested image is {tested.shape[1]}x{tested.shape[0]} px but the reference is "
                f"{reference.shape[1]}x{reference.shape[0]} px; they must be the same size"
            )
        return estimate_shift(tested, reference, max_shift=self.max_shift)

    def prepare(self, tested: np.ndarray, reference: np.ndarray | str, register: bool = True) -> Prepared:
        """Everything of an inspection before the network (NumPy only, so it can run in a second thread while
        the network scores the previous board): the reference, the registration, the tiles and their crops.

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
        t1 = time.perf_counter()
        tiles = board_tiles(*tested.shape, self.spec.patch, self.overlap)
        boxes, tested_crops, reference_crops = self.crop_tiles(tested, reference, tiles, shift)
        t2 = time.perf_counter()
        keep = None
        if self.gate is not None and tested_crops:  # the gate on the uint8 crops, where they need no resizing
            keep = self.gate.keep_crops(np.stack(tested_crops), np.stack(reference_crops))
        timings = {"register": t1 - t0, "crop": t2 - t1, "gate": time.perf_counter() - t2}
        return Prepared(tested, reference, name, shift, tiles, boxes, tested_crops, reference_crops, timings, keep)

    @torch.inference_mode()
    def finish(self, prepared: Prepared) -> Inspection:
        """The network, the verdict and the detector's boxes of a board after :meth:`prepare`."""
        p = prepared
        t2 = time.perf_counter()
        scores, scored = self.score_tiles(
            p.tested_crops, p.reference_crops, (p.name, tuple(p.boxes)) if p.name is not None else None, p.keep
        )
        t3 = time.perf_counter()
        thr = self.bundle.threshold
        results = [
            TileResult(int(y), int(x), int(h), int(w), float(s), bool(s > thr))
            for (y, x, h, w), s in zip(p.tiles.tolist(), scores, strict=True)
        ]
        timings = p.timings | {"network": t3 - t2, "rest": time.perf_counter() - t3}
        detections = []
        if self.detector is not None:
            t4 = time.perf_counter()
            detections = self.detect(p.tested, p.reference)
            if self.flag_detections is not None:
                flag_by_detections(results, detections, self.flag_detections)
            timings["detect"] = time.perf_counter() - t4
        return Inspection(
            any(r.defective for r in results),
            thr,
            {"dy": p.shift.dy, "dx": p.shift.dx, "score": round(p.shift.score, 4)},
            results,
            (int(p.tested.shape[0]), int(p.tested.shape[1])),
            sum(timings.values()),
            self.model.score_label,
            timings,
            scored,
            detections,
        )

    def inspect(self, tested: np.ndarray, reference: np.ndarray | str, register: bool = True) -> Inspection:
        """Verdict on a (H, W) uint8 tested board against a reference image or a registered board name, and
        the detector's boxes when the inspector has one (:meth:`prepare`, then :meth:`finish`).

        Raises:
            RegistrationError: sizes differ, or no shift within ``max_shift`` matches.
            PcbsiamError: an unknown board name, or an image smaller than a tile.
        """
        return self.finish(self.prepare(tested, reference, register))

    def stream(
        self,
        items: Iterable[T],
        load: Callable[[T], tuple[np.ndarray, np.ndarray | str]],
        pipeline: bool = True,
    ) -> Iterator[tuple[T, Inspection | PcbsiamError]]:
        """Inspect many boards as a two-stage pipeline: a second thread loads (``load``: decoding) and
        prepares (:meth:`prepare`) the next board while this one runs the network and decides. On 2 cores this
        keeps both busy: the NumPy stages use one, the network the other (and both when it is alone).

        Args:
            items: whatever names a board (paths, records).
            load: ``item -> (tested, reference)`` as :meth:`inspect` takes them.
            pipeline: False to do every stage in this thread, one board after the other.

        Yields:
            ``(item, Inspection)`` in the order of ``items``, or ``(item, error)`` for a board that could not be
            loaded or inspected (the sentence of a :class:`~pcbsiam.errors.PcbsiamError`).
        """

        def ready(item: T) -> Prepared:
            t0 = time.perf_counter()
            tested, reference = load(item)
            t1 = time.perf_counter()
            prepared = self.prepare(tested, reference)
            prepared.timings["decode"] = t1 - t0
            return prepared

        if not pipeline:
            for item in items:
                try:
                    yield item, self.finish(ready(item))
                except PcbsiamError as exc:
                    yield item, exc
            return
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="pcbsiam-prepare") as pool:
            it = iter(items)
            pending: deque[tuple[T, Future[Prepared]]] = deque()
            for item in it:
                pending.append((item, pool.submit(ready, item)))
                break
            while pending:
                item, future = pending.popleft()
                for nxt in it:  # the next board's preparation starts before this one's network
                    pending.append((nxt, pool.submit(ready, nxt)))
                    break
                try:
                    yield item, self.finish(future.result())
                except PcbsiamError as exc:
                    yield item, exc

    def detect(self, tested: np.ndarray, reference: np.ndarray) -> list[dict]:
        """Records (:meth:`~pcbsiam.detection.records.Detections.records`, boxes to 0.1 px) of the detector's
        boxes on a (H, W) uint8 pair.

        Raises:
            PcbsiamError: the detector cannot compare the pair.
        """
        assert self.detector is not None
        try:
            found = self.detector.detect(tested, reference)
        except PcbsiamError:
            raise
        except ValueError as exc:  # the detectors' sentences about the pair (shapes, sizes)
            raise PcbsiamError(f"the detector cannot compare the pair: {exc}") from None
        return found.records(box_decimals=1)
