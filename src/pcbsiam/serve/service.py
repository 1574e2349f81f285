"""What the HTTP layer calls: decode uploads safely, inspect in a bounded worker pool, record the result.

The endpoints in :mod:`pcbsiam.serve.app` stay thin; everything that can fail on user input raises
:class:`ServiceError`, which carries the HTTP status and one sentence for the client.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import logging
import math
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from pcbsiam.data.images import to_gray
from pcbsiam.deploy.backends import engine_for
from pcbsiam.deploy.bundle import load_bundle
from pcbsiam.deploy.inspector import (
    Inspection,
    Inspector,
    TileResult,
    check_flag_detections,
    make_inspection_detector,
)
from pcbsiam.errors import PcbsiamError, RegistrationError
from pcbsiam.ready import resolve_model
from pcbsiam.serve.db import InspectionStore, StoreUnavailable
from pcbsiam.serve.middleware import shown

log = logging.getLogger(__name__)

T = TypeVar("T")

#: ``Retry-After`` of a 503 for a database that cannot be written.
RETRY = {"Retry-After": "30"}

#: Image formats the service decodes; anything else is refused before Pillow looks further.
FORMATS = ("PNG", "JPEG", "BMP", "TIFF", "WEBP")


class ServiceError(Exception):
    """A request the service refuses.

    Args:
        status: HTTP status code.
        detail: one sentence for the client.
        headers: extra response headers (``Retry-After``, ``WWW-Authenticate``).
    """

    def __init__(self, status: int, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.headers = headers or {}


@dataclass
class Upload:
    """An uploaded file: its form field, client file name and bytes."""

    field: str
    filename: str | None
    data: bytes

    @property
    def sha256(self) -> str:
        """Hex SHA-256 of the bytes."""
        return hashlib.sha256(self.data).hexdigest()


def decode_image(upload: Upload, max_pixels: int) -> np.ndarray:
    """Decode an uploaded image to greyscale after checking its pixel count from the header.

    Returns:
        (H, W) uint8.

    Raises:
        ServiceError: 413 when the header announces more than ``max_pixels`` pixels, 422 when the
            bytes are empty, not an image of a supported format, or truncated.
    """
    field = upload.field
    if not upload.data:
        raise ServiceError(422, f"form field {field!r} is an empty file; upload a PNG, JPEG, BMP, TIFF or WebP image")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(upload.data), formats=FORMATS) as img:
                width, height = img.size
                if width * height > max_pixels:
                    raise ServiceError(
                        413,
                        f"form field {field!r} is an image of {width}x{height} px = {width * height} pixels, "
                        f"more than the {max_pixels} this service accepts",
                    )
                img.load()
                return to_gray(img)
    except ServiceError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ServiceError(413, f"form field {field!r} is refused as a decompression bomb: {exc}") from exc
    except UnidentifiedImageError as exc:
        raise ServiceError(
            422, f"form field {field!r} is not an image in a supported format ({', '.join(FORMATS)})"
        ) from exc
    except Exception as exc:  # Pillow raises OSError, SyntaxError, ValueError, ... on broken files
        raise ServiceError(
            422, f"form field {field!r} cannot be decoded as an image ({exc}); is the file truncated?"
        ) from exc


def encode_png(image: np.ndarray) -> bytes:
    """Lossless PNG bytes of a (H, W) uint8 image."""
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file, or of a run folder's ``checkpoints/best.pt`` (what :func:`load_bundle` reads)."""
    path = Path(path)
    if path.is_dir():
        path = path / "checkpoints" / "best.pt"
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def inspection_of(row: dict[str, Any]) -> Inspection:
    """Rebuild an :class:`Inspection` from a stored row (for drawing its overlay)."""
    tiles = [TileResult(**t) for t in row["tiles"]]
    shift = {"dy": row["shift_dy"], "dx": row["shift_dx"], "score": row["shift_score"]}
    size = (row["height"], row["width"])
    return Inspection(
        row["defective"],
        row["threshold"],
        shift,
        tiles,
        size,
        row["seconds"],
        row["score_name"],
        detections=list(row.get("detections") or []),
    )


#: Host names the service answers for by default: the loopback interface's.
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")


def host_names(names: Iterable[str]) -> tuple[str, ...]:
    """Host names as ``Host`` headers are compared: lower case, no brackets or final dot, each once."""
    return tuple(dict.fromkeys(n.strip().strip("[]").rstrip(".").lower() for n in names if n.strip()))


def allowed_hosts_for(bind: str, extra: Iterable[str] = ()) -> tuple[str, ...]:
    """The allowed ``Host`` names of a service bound to ``bind``: loopback, ``bind`` itself unless it is a
    wildcard address (``0.0.0.0``, ``::``), then ``extra`` (``*`` allows any host)."""
    return host_names([*LOOPBACK_HOSTS, *([] if bind in ("", "0.0.0.0", "::") else [bind]), *extra])


@dataclass(frozen=True)
class ServiceSettings:
    """Limits and inspection settings of the service.

    Attributes:
        max_upload_bytes: largest request body, enforced while it is read (413 beyond).
        max_pixels: largest image accepted, in pixels, checked from the header before decoding (413 beyond).
            The default, 2048x2048 px, keeps one inspection within a few seconds on 2 CPU cores: with a
            ResNet18 bundle of 128 px tiles and input (like ``cpu-small``) it took 4.1 s on 2 idle cores and
            7.7 s on one (on one core: 0.6 s at 640x640, 2.7 s at 1280x1280, 10.4 s at 2560x2560, 32 s at
            4480x4480), and raised the peak memory by about 110 MB, plus about 90 MB to draw its overlay.
        max_concurrency: inspections run at once (worker threads).
        max_queue: inspections allowed to wait for a worker; beyond that requests get 503.
        inspection_timeout_s: time budget of one inspection or overlay, queueing included: past it the
            request gets 503 and the inspection is not recorded (its worker finishes the computation,
            and keeps its slot until then, because a thread cannot be stopped).
        allowed_hosts: the names a request's ``Host`` header may give (any port); others get 400, which
            stops DNS-rebinding pages from reaching the service. ``*`` allows any host.
        overlap, max_shift, batch_size, device: passed to :class:`~pcbsiam.deploy.inspector.Inspector`.
        store_images: keep the tested image (lossless PNG) in the row so that its overlay can be drawn later.
        detector: also find typed defect boxes in each inspection: ``classical``, or the path of a learned
            detector file (``pcbsiam train-detector``); ``None``: tile verdicts only. Each box is recorded in
            the ``detections`` table and drawn on the overlay; the verdict stays the tiles'. The classical
            detector takes copper to be dark, as in DeepPCB's images, and adds its time to each inspection's.
        detector_engine: ``torch``, or an ONNX graph of the learned detector's verifier (``pcbsiam
            export-detector``, fp32 or int8) that ONNX Runtime runs in its place.
        flag_detections: with a detector, tiles holding half of the box of a detection with this confidence or
            more are defective too, and so is the board (``Inspector(flag_detections=...)``); None: the tiles'.
        engine: ``torch`` (the bundle's network), or an ONNX graph exported from the bundle (``pcbsiam
            export``, fp32 or int8) that every worker thread runs with ONNX Runtime.
    """

    max_upload_bytes: int = 20 * 2**20
    max_pixels: int = 2048 * 2048
    max_concurrency: int = 2
    max_queue: int = 16
    inspection_timeout_s: float = 30.0
    allowed_hosts: tuple[str, ...] = LOOPBACK_HOSTS
    overlap: float = 0.0
    max_shift: int = 16
    batch_size: int = 32
    device: str = "cpu"
    store_images: bool = True
    detector: str | None = None
    detector_engine: str = "torch"
    flag_detections: float | None = None
    engine: str = "torch"

    def __post_init__(self) -> None:
        if self.max_concurrency < 1 or self.max_queue < 0:
            raise PcbsiamError(
                f"max_concurrency must be >= 1 and max_queue >= 0, got {self.max_concurrency}, {self.max_queue}"
            )
        if not self.inspection_timeout_s > 0 or self.max_pixels < 1 or self.max_upload_bytes < 1:
            raise PcbsiamError(
                "inspection_timeout_s, max_pixels and max_upload_bytes must be positive, got "
                f"{self.inspection_timeout_s}, {self.max_pixels}, {self.max_upload_bytes}"
            )
        if isinstance(self.allowed_hosts, str) or not host_names(self.allowed_hosts):
            raise PcbsiamError(f"allowed_hosts must be a non-empty list of host names, got {self.allowed_hosts!r}")
        object.__setattr__(self, "allowed_hosts", host_names(self.allowed_hosts))
        check_flag_detections(self.flag_detections, self.detector is not None)

    @property
    def inspector_args(self) -> dict[str, Any]:
        """Keyword arguments of :class:`~pcbsiam.deploy.inspector.Inspector`."""
        keys = ("device", "overlap", "max_shift", "batch_size")
        return {k: getattr(self, k) for k in keys}


class InspectionService:
    """A loaded bundle, a bounded pool of inspection threads and the record store.

    Args:
        bundle_path: calibrated bundle file.
        db_url: SQLAlchemy URL of the record store (opened once the bundle has loaded).
        settings: limits and inspection settings (defaults when None).
    """

    def __init__(self, bundle_path: str | Path, db_url: str, settings: ServiceSettings | None = None) -> None:
        s = self.settings = settings or ServiceSettings()
        bundle_path = resolve_model(bundle_path)  # a ready model's name: its file in the package
        self.bundle = load_bundle(bundle_path, s.device)
        self.model_id = file_sha256(bundle_path)
        # one detector for every worker thread, like the network: detectors keep no state between pairs
        self.detector = make_inspection_detector(s.detector, s.device, s.detector_engine)
        # one ONNX Runtime session for every worker thread (its run() may be called from several threads)
        self.engine = engine_for(s.engine, self.bundle, torch.get_num_threads())
        Inspector(self.bundle, **s.inspector_args)  # fails now, with a sentence, on an uncalibrated model
        self.store = InspectionStore(db_url)
        self.capacity = s.max_concurrency + s.max_queue
        self._pending = 0
        self._lock = threading.Lock()
        self._local = threading.local()
        self.executor = ThreadPoolExecutor(s.max_concurrency, thread_name_prefix="pcbsiam-inspect")

    @property
    def boards(self) -> dict[str, tuple[int, int]]:
        """Registered board names and their (height, width)."""
        return {name: (int(img.shape[0]), int(img.shape[1])) for name, img in sorted(self.bundle.boards.items())}

    @property
    def pending(self) -> int:
        """Jobs running or waiting for a worker."""
        return self._pending

    def _inspector(self) -> Inspector:
        # One inspector (and reference cache) per worker thread; the network itself is shared read-only.
        inspector = getattr(self._local, "inspector", None)
        if inspector is None:
            inspector = self._local.inspector = Inspector(
                self.bundle,
                **self.settings.inspector_args,
                engine=self.engine,
                detector=self.detector,
                flag_detections=self.settings.flag_detections,
            )
        return inspector

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a CPU-heavy job on the worker pool and wait at most ``inspection_timeout_s`` for it.

        Raises:
            ServiceError: 503 when ``max_concurrency + max_queue`` jobs are pending, or when the job did
                not end in time (it is dropped if still queued; a running one finishes unrecorded).
        """
        with self._lock:
            if self._pending >= self.capacity:
                raise ServiceError(
                    503,
                    f"the service is busy: {self._pending} jobs are running or queued (limit {self.capacity}); "
                    "retry shortly",
                    {"Retry-After": "2"},
                )
            self._pending += 1
        ticket = Ticket()
        try:
            job = self.executor.submit(self._work, ticket, fn, *args)
        except BaseException:
            self._release()
            raise
        # released when the job really ends: a client that hangs up, or a job past its time, does not
        # free a busy worker's slot
        job.add_done_callback(self._release)
        done = asyncio.wrap_future(job)
        try:
            return await asyncio.wait_for(asyncio.shield(done), self.settings.inspection_timeout_s)
        except TimeoutError:
            if not ticket.abandon():
                return await done  # the row is being committed: the answer is a moment away
            limit = self.settings.inspection_timeout_s
            raise ServiceError(
                503,
                f"the request did not finish within this service's {limit:g} s limit and was abandoned, "
                "so nothing was recorded; send a smaller image or retry when the service is less busy",
                {"Retry-After": "10"},
            ) from None
        except asyncio.CancelledError:
            ticket.abandon()
            raise
        finally:
            if ticket.abandoned:
                job.cancel()  # drops the job if it is still queued
            done.add_done_callback(_consume)

    def _work(self, ticket: Ticket, fn: Callable[..., T], *args: Any) -> T:
        # runs on a worker thread: jobs see their ticket through `self._local`
        if ticket.abandoned:
            raise ServiceError(503, "abandoned before it started")
        self._local.ticket = ticket
        try:
            return fn(*args)
        finally:
            self._local.ticket = None

    def _going_on(self, commit: bool = False) -> None:
        """Raise if the current job was abandoned; with ``commit``, keep it from being abandoned from now on."""
        ticket: Ticket | None = getattr(self._local, "ticket", None)
        if ticket is None:
            return  # called outside `run`
        if (not ticket.commit()) if commit else ticket.abandoned:
            raise ServiceError(503, "abandoned: nobody waits for this job any more")

    def _release(self, _job: object = None) -> None:
        with self._lock:
            self._pending -= 1

    def check_board(self, board: str) -> None:
        """Raise a 422 with the known names if ``board`` is not registered."""
        if board not in self.bundle.boards:
            known = ", ".join(sorted(self.bundle.boards)) or "none"
            raise ServiceError(422, f"unknown board {board!r}; registered boards: {known}")

    def inspect(self, tested: Upload, template: Upload | None, board: str | None) -> dict[str, Any]:
        """Decode, inspect and record one board (runs on a worker thread); returns the stored row.

        Raises:
            ServiceError: bad image (413/422), sizes that cannot be registered (422), unknown board (422),
                a database that cannot be written (503).
        """
        t0 = time.perf_counter()
        image = decode_image(tested, self.settings.max_pixels)
        if template is not None:
            reference: np.ndarray | str = decode_image(template, self.settings.max_pixels)
        elif board is not None:
            self.check_board(board)
            reference = board
        else:
            raise ServiceError(422, "give either a 'template' file or a registered 'board' name")
        self._going_on()
        try:
            result = self._inspector().inspect(image, reference)
        except RegistrationError as exc:
            raise ServiceError(422, str(exc)) from exc
        except PcbsiamError as exc:
            raise ServiceError(422, str(exc)) from exc
        png = encode_png(image) if self.settings.store_images else None
        row = {
            "id": str(uuid.uuid4()),
            "created_at": datetime.now(UTC),
            "verdict": "defective" if result.defective else "pass",
            "defective": bool(result.defective),
            "max_score": float(result.max_score),
            "score_name": result.score_name,
            "threshold": float(result.threshold),
            "shift_dy": int(result.shift["dy"]),
            "shift_dx": int(result.shift["dx"]),
            "shift_score": _finite(result.shift["score"]),
            "height": int(image.shape[0]),
            "width": int(image.shape[1]),
            "tile_count": len(result.tiles),
            "defective_tiles": sum(t.defective for t in result.tiles),
            "tiles": [
                {
                    "y": t.y,
                    "x": t.x,
                    "h": t.h,
                    "w": t.w,
                    "score": float(t.score),
                    "defective": t.defective,
                    "detected": t.detected,
                }
                for t in result.tiles
            ],
            "tested_sha256": tested.sha256,
            "reference_sha256": template.sha256 if template is not None else None,
            "board": board if template is None else None,
            "tested_filename": _name(tested.filename),
            "reference_filename": _name(template.filename) if template is not None else None,
            "model_id": self.model_id,
            "seconds": round(time.perf_counter() - t0, 6),
            "detections": result.detections,
        }
        self._going_on(commit=True)
        try:
            self.store.add({**row, "tested_png": png})
        except StoreUnavailable as exc:
            log.error("inspection %s not recorded: %s", row["id"], exc)
            raise ServiceError(503, f"the inspection was not recorded because {exc}; retry later", RETRY) from exc
        return {**row, "has_image": png is not None}

    def overlay(self, inspection_id: str) -> bytes:
        """PNG of the stored tested image with the stored tile scores and detections drawn on it (runs on a
        worker thread).

        Raises:
            ServiceError: 404 for an unknown id or an inspection recorded without its image.
        """
        from pcbsiam.viz.overlay import render_overlay

        found, row, png = self.store.image(inspection_id)
        if not found:
            raise ServiceError(404, f"no inspection with id {shown(inspection_id)}")
        if png is None:
            raise ServiceError(404, f"inspection {inspection_id} was recorded without its image, so it has no overlay")
        with Image.open(io.BytesIO(png)) as img:
            image = to_gray(img)
        return render_overlay(image, inspection_of(row))

    def close(self) -> None:
        """Stop the worker threads (waiting for running jobs) and release the database."""
        self.executor.shutdown(wait=True, cancel_futures=True)
        self.store.close()


class Ticket:
    """What the request waiting for a job and the worker running it agree on: once abandoned (the
    request answered 503 or hung up), the job records nothing; once committing, it is not abandoned."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.abandoned = False
        self.committing = False

    def abandon(self) -> bool:
        """Abandon the job unless it is committing; True when it is abandoned."""
        with self._lock:
            self.abandoned = self.abandoned or not self.committing
            return self.abandoned

    def commit(self) -> bool:
        """Start committing unless abandoned; True when the job may record its result."""
        with self._lock:
            self.committing = not self.abandoned
            return self.committing


def _consume(future: asyncio.Future) -> None:
    # read a job's outcome so that asyncio does not log one that nobody awaited as never retrieved
    if not future.cancelled():
        future.exception()


def _finite(value: float) -> float:
    # a registration score is a correlation: NaN when an image is constant, which means no evidence
    value = float(value)
    return value if math.isfinite(value) else 0.0


def _name(filename: str | None) -> str | None:
    """The last 255 characters of an uploaded file's name, without NUL characters (PostgreSQL text refuses them)."""
    filename = (filename or "").replace("\x00", "")
    return filename[-255:] or None
