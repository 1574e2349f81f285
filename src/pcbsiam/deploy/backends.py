"""Inference backends behind one interface: PyTorch, ONNX Runtime fp32 and ONNX Runtime int8, for every mode.

Every backend scores normalised patch pairs, ``(B, 1, S, S), (B, 1, S, S) -> (B,) scores and verdicts`` at
the bundle's threshold, and knows the patch geometry its inputs are cut with. Backends of embedding models
(the paper's mode) also embed patches, so a known board's reference tiles are embedded once. Build one
with :func:`make_engine`.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np
import torch

from pcbsiam.data.crops import PatchSpec
from pcbsiam.deploy.bundle import Bundle
from pcbsiam.deploy.export import export_onnx, graph_inputs, ort_session, quantize_int8, read_metadata
from pcbsiam.errors import ConfigError, PcbsiamError

ENGINES = ("torch", "onnx-fp32", "onnx-int8")


class Engine(ABC):
    """Scores patch pairs (and embeds patches, for embedding models).

    Attributes:
        name: engine name (``torch``, ``onnx-fp32``, ``onnx-int8``).
        threshold: score above which a patch is defective.
        spec: the patch geometry the inputs are cut with (input size, context, ...).
        embeds: whether :meth:`embed` exists (the model's encoding is one embedding per patch).
        score_name: what the score is (``distance``, ``logit``).
    """

    name: str
    threshold: float
    spec: PatchSpec
    embeds: bool
    score_name: str

    @property
    def input_size(self) -> int:
        """Side S of the patches the engine takes."""
        return self.spec.input_size

    @abstractmethod
    def compare(self, tested: np.ndarray, reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Scores (B,) float32 and verdicts (B,) bool (True = defective) of (B, 1, S, S) patch pairs."""

    def embed(self, x: np.ndarray) -> np.ndarray:
        """(B, 1, S, S) float32 normalised patches -> (B, D) float32 embeddings (embedding models only)."""
        raise PcbsiamError(f"the {self.name} engine's model has no single embedding per patch")

    def tile_work(self, tested: np.ndarray, reference: np.ndarray) -> np.ndarray:
        """What inspecting a tile costs when the board's references are known: embedding the tested
        tile for embedding models (reference embeddings are cached), scoring the pair otherwise."""
        return self.embed(tested) if self.embeds else self.compare(tested, reference)[0]


class TorchEngine(Engine):
    """The bundle's PyTorch network, run under ``torch.inference_mode`` on ``device``.

    Args:
        bundle: a bundle (its threshold may be NaN if only scores are wanted).
        device: where to run.
    """

    name = "torch"

    def __init__(self, bundle: Bundle, device: str | torch.device = "cpu") -> None:
        self.device = torch.device(device)
        self.model = bundle.model.to(self.device).eval()
        self.threshold = bundle.threshold
        self.spec = bundle.spec
        self.embeds = self.model.embeds
        self.score_name = self.model.score_name

    def _tensor(self, x: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(self.device)

    @torch.inference_mode()
    def compare(self, tested: np.ndarray, reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        scores = self.model.score_pairs(self._tensor(tested), self._tensor(reference)).float().cpu().numpy()
        return scores, scores > self.threshold

    @torch.inference_mode()
    def embed(self, x: np.ndarray) -> np.ndarray:
        if not self.embeds:
            return super().embed(x)
        return self.model.encode(self._tensor(x)).float().cpu().numpy()


class OrtEngine(Engine):
    """An exported graph (fp32 or int8) run by ONNX Runtime on the CPU.

    With an ``embeddings`` graph, :meth:`embed` feeds zero reference embeddings (negligible cost) and
    :meth:`compare` embeds the references first; a ``patches`` graph takes both patches.

    Args:
        onnx_path: a graph written by :func:`pcbsiam.deploy.export.export_onnx` or ``quantize_int8``.
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
        self.graph = meta.get("graph", "")
        if not self.graph or names != list(graph_inputs(self.graph)):
            raise PcbsiamError(f"{self.path} is not a pcbsiam graph (inputs {names}); export it with `pcbsiam export`")
        self.outputs = [o.name for o in self.session.get_outputs()]
        self.embeds = "embedding" in self.outputs
        self.threshold = float(meta.get("threshold", "nan"))
        self.views = int(meta.get("views", "1"))  # test-time views inside the graph (1 in graphs before them)
        self.spec = PatchSpec.from_metadata(meta)
        self.score_name = meta.get("score", "score")
        self.embedding_dim = int(meta.get("embedding_dim", 0))
        self.name = name or ("onnx-int8" if "quantization" in meta else "onnx-fp32")

    def _run(self, tested: np.ndarray, second: np.ndarray) -> list[np.ndarray]:
        feed = dict(
            zip(
                graph_inputs(self.graph),
                (np.ascontiguousarray(tested, np.float32), np.ascontiguousarray(second, np.float32)),
                strict=True,
            )
        )
        return self.session.run(self.outputs, feed)

    def embed(self, x: np.ndarray) -> np.ndarray:
        if not self.embeds:
            return super().embed(x)
        second = np.zeros((len(x), self.embedding_dim), np.float32) if self.graph == "embeddings" else x
        return self._run(x, second)[2]

    def compare(self, tested: np.ndarray, reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Scores (B,) and the graph's own verdicts (B,) bool of (B, 1, S, S) patch pairs."""
        second = reference if self.graph == "patches" else self.embed(reference)
        out = self._run(tested, second)
        return out[0], out[1].astype(bool)

    def compare_embeddings(self, tested: np.ndarray, reference_embedding: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Scores (B,) and verdicts (B,) of (B, 1, S, S) tested patches against (B, D) reference embeddings."""
        if self.graph != "embeddings":
            raise PcbsiamError(f"{self.path} is a `patches` graph; export with --graph embeddings for this")
        out = self._run(tested, reference_embedding)
        return out[0], out[1].astype(bool)


def bundle_fingerprint(bundle: Bundle) -> str:
    """12 hex digits identifying the weights, threshold and config (names cached ONNX files)."""
    h = hashlib.sha256(f"{bundle.cfg.model}|{bundle.spec}|{bundle.threshold!r}".encode())
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
    calibration_references: np.ndarray | None = None,
) -> Engine:
    """The engine ``name`` for ``bundle``; ONNX graphs are written to ``workdir``.

    Embedding models get an ``embeddings`` graph (reference tiles embedded once), the others a
    ``patches`` graph. Files are named by a fingerprint of the weights (and of the calibration patches
    for int8), so an existing file is reused only for the same bundle.

    Args:
        name: ``torch``, ``onnx-fp32`` or ``onnx-int8``.
        bundle: a calibrated bundle.
        workdir: folder for the ONNX files.
        calibration_patches: (N, 1, S, S) float32 normalised training patches; needed for ``onnx-int8``.
        threads: ONNX Runtime intra-op threads (default ``torch.get_num_threads()``).
        calibration_references: (N, 1, S, S) references of the calibration patches (pair models
            calibrate on real pairs; by default the patches in another order).

    Raises:
        PcbsiamError: an unknown name, or ``onnx-int8`` without calibration patches.
    """
    if name not in ENGINES:
        raise PcbsiamError(f"unknown engine {name!r}; choose from {', '.join(ENGINES)}")
    if name == "torch":
        return TorchEngine(bundle)
    workdir = Path(workdir)
    graph = "embeddings" if bundle.model.embeds else "patches"
    stem = f"{bundle.cfg.model.mode}-{bundle.cfg.model.backbone}-{bundle_fingerprint(bundle)}-{graph}"
    fp32 = workdir / f"{stem}.onnx"
    if not fp32.is_file():
        export_onnx(bundle, fp32, graph=graph)
    if name == "onnx-fp32":
        return OrtEngine(fp32, threads, name)
    if calibration_patches is None or not len(calibration_patches):
        raise PcbsiamError("the onnx-int8 engine needs calibration patches: training patches of the model's input size")
    patches = np.ascontiguousarray(calibration_patches, dtype=np.float32)
    h = hashlib.sha256(patches.tobytes())
    if calibration_references is not None:
        h.update(np.ascontiguousarray(calibration_references, dtype=np.float32).tobytes())
    int8 = workdir / f"{stem}-int8-{h.hexdigest()[:8]}.onnx"
    if not int8.is_file():
        quantize_int8(fp32, int8, patches, calibration_references)
    return OrtEngine(int8, threads, name)


def engine_kind(spec: str | Path | None) -> str:
    """``torch`` for ``None`` / ``"torch"``, else ``onnx-fp32`` or ``onnx-int8`` from an exported graph's metadata.

    Raises:
        ConfigError: ``spec`` is neither ``torch`` nor an existing file.
    """
    path = _engine_file(spec)
    if path is None:
        return "torch"
    return "onnx-int8" if "quantization" in read_metadata(path) else "onnx-fp32"


def _engine_file(spec: str | Path | None) -> Path | None:
    """None for ``torch`` (or None), else the ONNX file ``spec`` names (a sentence when it is not a file)."""
    if spec is None or str(spec) == "torch":
        return None
    path = Path(spec)
    if not path.is_file():
        raise ConfigError(
            f"engine {str(spec)!r} is neither 'torch' nor an ONNX file; write one with `pcbsiam export --model "
            "BUNDLE --onnx FILE` (add --int8 --data ROOT for the int8 graph)"
        )
    return path


def engine_for(spec: str | Path | None, bundle: Bundle, threads: int | None = None) -> Engine | None:
    """The engine an inspection runs its network on: None for the bundle's own PyTorch network, or ONNX
    Runtime on a graph exported from this bundle (``pcbsiam export``, fp32 or int8).

    Args:
        spec: ``torch`` (or None), or the path of an ONNX file.
        bundle: the bundle the graph must come from: same patch geometry and threshold.
        threads: ONNX Runtime intra-op threads (default ``torch.get_num_threads()``).

    Raises:
        ConfigError: not ``torch`` and not a file.
        PcbsiamError: the graph is not pcbsiam's, or was exported from another bundle.
    """
    path = _engine_file(spec)
    if path is None:
        return None
    engine = OrtEngine(path, threads)  # reads the graph's metadata once
    if engine.spec != bundle.spec or not np.isclose(engine.threshold, bundle.threshold, rtol=1e-6, atol=1e-9):
        raise PcbsiamError(
            f"{spec} was exported from another bundle (threshold {engine.threshold:.6g}, {engine.spec}) than "
            f"the one given (threshold {bundle.threshold:.6g}, {bundle.spec}); export it again from this bundle"
        )
    if engine.views != bundle.cfg.model.views:
        raise PcbsiamError(
            f"{spec} scores each tile in {engine.views} view(s), the bundle as applied in {bundle.cfg.model.views} "
            f"(--views): the views are part of the exported graph; export it again with this setting"
        )
    return engine
