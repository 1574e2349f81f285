"""Inference engines behind one interface: PyTorch, ONNX Runtime fp32 and ONNX Runtime int8.

Every engine embeds normalised patches, ``(B, 1, S, S) float32 -> (B, D) float32``, and compares
patch pairs at the bundle's threshold. Build one with :func:`make_engine`.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np
import torch

from pcbsiam.bundle import Bundle
from pcbsiam.errors import PcbsiamError
from pcbsiam.export import export_onnx, graph_inputs, ort_session, quantize_int8, read_metadata

ENGINES = ("torch", "onnx-fp32", "onnx-int8")


class Engine(ABC):
    """Embeds normalised patches and compares pairs.

    Attributes:
        name: engine name (``torch``, ``onnx-fp32``, ``onnx-int8``).
        threshold: distance above which a patch is defective.
        input_size: side S of the patches the engine takes.
        context: px of surroundings around each patch in its crops (``data.context`` of the bundle).
    """

    name: str
    threshold: float
    input_size: int
    context: int = 0

    @abstractmethod
    def embed(self, x: np.ndarray) -> np.ndarray:
        """(B, 1, S, S) float32 normalised patches -> (B, D) float32 unit-norm embeddings."""

    def compare(self, tested: np.ndarray, reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Distances (B,) float32 and verdicts (B,) bool (True = defective) of (B, 1, S, S) patch pairs."""
        dist = np.sqrt(np.square(self.embed(tested) - self.embed(reference)).sum(axis=1))
        return dist, dist > self.threshold


class TorchEngine(Engine):
    """The bundle's PyTorch network, run under ``torch.inference_mode`` on ``device``.

    Args:
        bundle: a bundle (its threshold may be NaN if only embeddings are wanted).
        device: where to run.
    """

    name = "torch"

    def __init__(self, bundle: Bundle, device: str | torch.device = "cpu") -> None:
        self.device = torch.device(device)
        self.model = bundle.model.to(self.device).eval()
        self.threshold = bundle.threshold
        self.input_size = bundle.cfg.model.input_size
        self.context = bundle.cfg.data.context

    @torch.inference_mode()
    def embed(self, x: np.ndarray) -> np.ndarray:
        """(B, 1, S, S) float32 -> (B, D) float32."""
        t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(self.device)
        return self.model.embed(t).float().cpu().numpy()


class OrtEngine(Engine):
    """An exported graph (fp32 or int8) run by ONNX Runtime on the CPU.

    With an ``embeddings`` graph, :meth:`embed` feeds zero reference embeddings (negligible cost); with a
    ``patches`` graph it has to embed the batch twice, so prefer ``embeddings`` graphs for embedding.

    Args:
        onnx_path: a graph written by :func:`pcbsiam.export.export_onnx` or ``quantize_int8``.
        threads: intra-op threads (default ``torch.get_num_threads()``).
        name: engine name for reports (default from the graph's metadata).
    """

    def __init__(self, onnx_path: str | Path, threads: int | None = None, name: str | None = None) -> None:
        self.path = Path(onnx_path)
        if not self.path.is_file():
            raise PcbsiamError(f"ONNX graph {self.path} not found: write one with `pcbsiam export`")
        meta = read_metadata(self.path)
        self.session = ort_session(self.path, threads)
        names = [i.name for i in self.session.get_inputs()]
        self.mode = meta.get("mode") or ("embeddings" if "reference_embedding" in names else "patches")
        if names != list(graph_inputs(self.mode)):
            raise PcbsiamError(f"{self.path} is not a pcbsiam graph: its inputs are {names}")
        self.threshold = float(meta.get("threshold", "nan"))
        self.input_size = int(meta.get("input_size", 0)) or int(self.session.get_inputs()[0].shape[-1])
        self.context = int(meta.get("context", 0))
        self.embedding_dim = int(meta.get("embedding_dim", 0)) or int(self.session.get_outputs()[2].shape[-1])
        self.name = name or ("onnx-int8" if "quantization" in meta else "onnx-fp32")

    def _run(self, tested: np.ndarray, second: np.ndarray) -> list[np.ndarray]:
        feed = dict(
            zip(
                graph_inputs(self.mode),
                (np.ascontiguousarray(tested, np.float32), np.ascontiguousarray(second, np.float32)),
                strict=True,
            )
        )
        return self.session.run(["distance", "defective", "embedding"], feed)

    def embed(self, x: np.ndarray) -> np.ndarray:
        """(B, 1, S, S) float32 -> (B, D) float32."""
        second = np.zeros((len(x), self.embedding_dim), np.float32) if self.mode == "embeddings" else x
        return self._run(x, second)[2]

    def compare(self, tested: np.ndarray, reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Distances (B,) and the graph's own verdicts (B,) bool of (B, 1, S, S) patch pairs."""
        second = reference if self.mode == "patches" else self.embed(reference)
        dist, defective, _ = self._run(tested, second)
        return dist, defective.astype(bool)

    def compare_embeddings(self, tested: np.ndarray, reference_embedding: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Distances (B,) and verdicts (B,) of (B, 1, S, S) tested patches against (B, D) reference embeddings."""
        if self.mode != "embeddings":
            raise PcbsiamError(f"{self.path} is a `patches` graph; export with --mode embeddings for this")
        dist, defective, _ = self._run(tested, reference_embedding)
        return dist, defective.astype(bool)


def bundle_fingerprint(bundle: Bundle) -> str:
    """12 hex digits identifying the weights, threshold and input size (names cached ONNX files)."""
    h = hashlib.sha256(f"{bundle.cfg.model}|{bundle.threshold!r}".encode())
    for key, value in bundle.model.state_dict().items():
        h.update(key.encode())
        h.update(value.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:12]


def make_engine(
    name: str,
    bundle: Bundle,
    workdir: str | Path,
    calibration_patches: np.ndarray | None = None,
    threads: int | None = None,
) -> Engine:
    """The engine ``name`` for ``bundle``; ONNX graphs (``embeddings`` mode) are written to ``workdir``.

    Files are named by a fingerprint of the weights (and of the calibration patches for int8), so an
    existing file is reused only for the same bundle.

    Args:
        name: ``torch``, ``onnx-fp32`` or ``onnx-int8``.
        bundle: a calibrated bundle.
        workdir: folder for the ONNX files.
        calibration_patches: (N, 1, S, S) float32 normalised training patches; needed for ``onnx-int8``.
        threads: ONNX Runtime intra-op threads (default ``torch.get_num_threads()``).

    Raises:
        PcbsiamError: an unknown name, or ``onnx-int8`` without calibration patches.
    """
    if name not in ENGINES:
        raise PcbsiamError(f"unknown engine {name!r}; choose from {', '.join(ENGINES)}")
    if name == "torch":
        return TorchEngine(bundle)
    workdir = Path(workdir)
    stem = f"{bundle.cfg.model.backbone}-{bundle_fingerprint(bundle)}-embeddings"
    fp32 = workdir / f"{stem}.onnx"
    if not fp32.is_file():
        export_onnx(bundle, fp32, mode="embeddings")
    if name == "onnx-fp32":
        return OrtEngine(fp32, threads, name)
    if calibration_patches is None or not len(calibration_patches):
        raise PcbsiamError("the onnx-int8 engine needs calibration patches: training patches of the model's input size")
    patches = np.ascontiguousarray(calibration_patches, dtype=np.float32)
    int8 = workdir / f"{stem}-int8-{hashlib.sha256(patches.tobytes()).hexdigest()[:8]}.onnx"
    if not int8.is_file():
        quantize_int8(fp32, int8, patches)
    return OrtEngine(int8, threads, name)
