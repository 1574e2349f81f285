"""ONNX export of a calibrated bundle, its verification against PyTorch, and int8 static quantisation.

Two graphs are exported, both with the threshold inside and a dynamic batch axis N:

* ``patches``: inputs ``tested`` (N, 1, S, S) and ``reference`` (N, 1, S, S) float32 (normalised as
  :func:`pcbsiam.data.transforms.to_tensor` does).
* ``embeddings``: inputs ``tested`` (N, 1, S, S) and ``reference_embedding`` (N, D) float32, for a
  service that embeds a known board's reference tiles once.

Both give ``distance`` (N,) float32, ``defective`` (N,) bool and ``embedding`` (N, D) float32 (of the
tested patches). The graph's metadata holds the mode, threshold, input size, context margin, embedding size
and backbone.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from pcbsiam.bundle import Bundle
from pcbsiam.errors import PcbsiamError
from pcbsiam.io import atomic_path
from pcbsiam.models import SiameseFusionNet

if TYPE_CHECKING:
    import onnxruntime

MODES = ("patches", "embeddings")
OUTPUTS = ("distance", "defective", "embedding")
#: Largest embedding difference between ONNX Runtime and PyTorch that verification accepts.
EMBEDDING_TOL = 1e-4
#: Verdicts may differ only for distances this close to the threshold.
THRESHOLD_BAND = 1e-5
#: Operators quantised by :func:`quantize_int8`; normalisation and the distance stay float32.
INT8_OPS = ("Conv", "Gemm", "MatMul", "Add")


class PatchGraph(nn.Module):
    """Export wrapper of the ``patches`` mode: two patch batches in, distances and verdicts out."""

    def __init__(self, model: SiameseFusionNet) -> None:
        super().__init__()
        self.model = model

    def forward(self, tested: torch.Tensor, reference: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(N, 1, S, S), (N, 1, S, S) -> distance (N,), defective (N,) bool, embedding (N, D)."""
        emb = self.model.embed(tested)
        dist = self.model.distance(emb, self.model.embed(reference))
        return dist, dist > self.model.threshold, emb


class EmbeddingGraph(nn.Module):
    """Export wrapper of the ``embeddings`` mode: tested patches and precomputed reference embeddings."""

    def __init__(self, model: SiameseFusionNet) -> None:
        super().__init__()
        self.model = model

    def forward(self, tested: torch.Tensor, reference_embedding: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(N, 1, S, S), (N, D) -> distance (N,), defective (N,) bool, embedding (N, D)."""
        emb = self.model.embed(tested)
        dist = self.model.distance(emb, reference_embedding)
        return dist, dist > self.model.threshold, emb


def _check_mode(mode: str) -> None:
    if mode not in MODES:
        raise PcbsiamError(f"unknown export mode {mode!r}; choose one of {', '.join(MODES)}")


def _cpu_model(bundle: Bundle) -> SiameseFusionNet:
    if bundle.cfg.model.mode != "paper":
        raise PcbsiamError(
            f"ONNX export covers the paper's mode (embeddings and distances); this bundle is in the "
            f"{bundle.cfg.model.mode!r} mode, which is not exportable yet: use the PyTorch engine"
        )
    if np.isnan(bundle.threshold):
        raise PcbsiamError("the model has no threshold: run `pcbsiam calibrate` to make a bundle before exporting")
    return copy.deepcopy(bundle.model).cpu().float().eval()


def graph_inputs(mode: str) -> tuple[str, str]:
    """Input names of the graph of ``mode``."""
    _check_mode(mode)
    return ("tested", "reference") if mode == "patches" else ("tested", "reference_embedding")


def export_onnx(bundle: Bundle, path: str | Path, mode: str = "patches", opset: int = 17, verify: bool = True) -> Path:
    """Export the bundle's network as an ONNX graph (see the module docstring) and verify it.

    Uses the TorchScript-based ``torch.onnx.export`` (``dynamo=False``): the default dynamo exporter of
    torch 2.14 needs the ``onnxscript`` package, which pcbsiam does not depend on.

    Args:
        bundle: a calibrated bundle (its threshold goes into the graph).
        path: the ``.onnx`` file to write (atomically: only a verified graph appears there).
        mode: ``patches`` or ``embeddings``.
        opset: ONNX opset version.
        verify: run :func:`verify_onnx` before the file is put in place.

    Returns:
        ``path``.

    Raises:
        PcbsiamError: no threshold, an unknown mode, or a graph that does not match PyTorch.
    """
    import onnx

    inputs = graph_inputs(mode)
    model = _cpu_model(bundle)
    size, dim = bundle.cfg.model.input_size, bundle.cfg.model.embedding_dim
    wrapper = PatchGraph(model) if mode == "patches" else EmbeddingGraph(model)
    example = (
        torch.zeros(2, 1, size, size),
        torch.zeros(2, 1, size, size) if mode == "patches" else torch.zeros(2, dim),
    )
    axes = {name: {0: "N"} for name in (*inputs, *OUTPUTS)}
    with atomic_path(path) as tmp:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(
                wrapper,
                example,
                str(tmp),
                input_names=list(inputs),
                output_names=list(OUTPUTS),
                dynamic_axes=axes,
                opset_version=opset,
                do_constant_folding=True,
                dynamo=False,
            )
        proto = onnx.load(str(tmp))
        meta = {
            "pcbsiam.mode": mode,
            "pcbsiam.threshold": repr(bundle.threshold),
            "pcbsiam.input_size": str(size),
            "pcbsiam.context": str(bundle.cfg.data.context),
            "pcbsiam.embedding_dim": str(dim),
            "pcbsiam.patch": str(bundle.cfg.data.patch),
            "pcbsiam.backbone": bundle.cfg.model.backbone,
        }
        onnx.helper.set_model_props(proto, meta)
        onnx.save(proto, str(tmp))
        if verify:
            verify_onnx(bundle, tmp)
    return Path(path)


def read_metadata(onnx_path: str | Path) -> dict[str, str]:
    """The ``pcbsiam.*`` metadata of an exported graph (keys without the prefix)."""
    import onnx

    proto = onnx.load(str(onnx_path), load_external_data=False)
    return {p.key.removeprefix("pcbsiam."): p.value for p in proto.metadata_props if p.key.startswith("pcbsiam.")}


def ort_session(onnx_path: str | Path, threads: int | None = None) -> onnxruntime.InferenceSession:
    """A CPU onnxruntime session with ``threads`` intra-op threads (default: ``torch.get_num_threads()``)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = int(threads or torch.get_num_threads())
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])


@torch.inference_mode()
def _torch_embed(model: SiameseFusionNet, x: np.ndarray) -> np.ndarray:
    return model.embed(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))).float().numpy()


def compare_with_torch(bundle: Bundle, onnx_path: str | Path, tested: np.ndarray, reference: np.ndarray) -> dict:
    """Run the same patch pairs through an exported graph (fp32 or int8) and through PyTorch.

    Args:
        tested: (N, 1, S, S) float32 normalised patches.
        reference: (N, 1, S, S) float32 normalised patches.

    Returns:
        n, threshold, max_embedding_error, max_distance_error, verdict_agreement (share of equal
        verdicts), disagreements (verdicts that differ although the PyTorch distance is at least
        ``THRESHOLD_BAND`` away from the threshold).
    """
    model = _cpu_model(bundle)
    mode = read_metadata(onnx_path).get("mode", "patches")
    emb_t, emb_r = _torch_embed(model, tested), _torch_embed(model, reference)
    dist_t = np.sqrt(np.square(emb_t - emb_r).sum(axis=1))
    thr = bundle.threshold
    second = reference if mode == "patches" else emb_r
    feed = dict(zip(graph_inputs(mode), (tested.astype(np.float32), second.astype(np.float32)), strict=True))
    dist_o, defective_o, emb_o = ort_session(onnx_path).run(list(OUTPUTS), feed)
    differ = defective_o.astype(bool) != (dist_t > thr)
    return {
        "n": int(len(tested)),
        "threshold": thr,
        "max_embedding_error": float(np.abs(emb_o - emb_t).max(initial=0.0)),
        "max_distance_error": float(np.abs(dist_o - dist_t).max(initial=0.0)),
        "verdict_agreement": float(1.0 - differ.mean()) if len(differ) else 1.0,
        "disagreements": int((differ & (np.abs(dist_t - thr) >= THRESHOLD_BAND)).sum()),
    }


def verify_onnx(bundle: Bundle, onnx_path: str | Path, n: int = 4, seed: int = 0) -> dict:
    """Check an exported fp32 graph: ``onnx.checker``, then parity with PyTorch on ``n`` random pairs.

    Returns:
        The :func:`compare_with_torch` figures.

    Raises:
        PcbsiamError: the checker fails, embeddings differ by more than ``EMBEDDING_TOL``, or a verdict
            differs away from the threshold.
    """
    import onnx

    try:
        onnx.checker.check_model(str(onnx_path))
    except onnx.checker.ValidationError as exc:
        raise PcbsiamError(f"the exported graph {onnx_path} is not valid ONNX: {exc}") from exc
    rng = np.random.default_rng(seed)
    size = bundle.cfg.model.input_size
    tested, reference = rng.standard_normal((2, n, 1, size, size), dtype=np.float32)
    report = compare_with_torch(bundle, onnx_path, tested, reference)
    if report["max_embedding_error"] > EMBEDDING_TOL or report["disagreements"]:
        raise PcbsiamError(
            f"the exported graph does not match PyTorch: embeddings differ by up to "
            f"{report['max_embedding_error']:.2e} (tolerance {EMBEDDING_TOL:.0e}) and "
            f"{report['disagreements']} of {n} verdicts differ; the export was not written"
        )
    return report


class _PatchReader:
    """Calibration batches for onnxruntime: a ``CalibrationDataReader`` over normalised patches."""

    def __init__(self, feeds: list[dict[str, np.ndarray]]) -> None:
        self.feeds = feeds
        self.pos = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.pos >= len(self.feeds):
            return None
        self.pos += 1
        return self.feeds[self.pos - 1]

    def rewind(self) -> None:
        self.pos = 0


def _calibration_feeds(
    onnx_path: Path, tested: np.ndarray, reference: np.ndarray, batch_size: int
) -> list[dict[str, np.ndarray]]:
    mode = read_metadata(onnx_path).get("mode", "patches")
    names = graph_inputs(mode)
    if mode == "embeddings":
        sess = ort_session(onnx_path)
        dim = int(read_metadata(onnx_path)["embedding_dim"])
        chunks = [reference[i : i + batch_size] for i in range(0, len(reference), batch_size)]
        feeds = [{"tested": c, "reference_embedding": np.zeros((len(c), dim), np.float32)} for c in chunks]
        reference = np.concatenate([sess.run(["embedding"], f)[0] for f in feeds])
    return [
        {names[0]: tested[i : i + batch_size], names[1]: reference[i : i + batch_size]}
        for i in range(0, len(tested), batch_size)
    ]


def quantize_int8(
    onnx_path: str | Path,
    out_path: str | Path,
    calibration_patches: np.ndarray,
    reference_patches: np.ndarray | None = None,
    per_channel: bool = True,
    op_types: Sequence[str] = INT8_OPS,
    batch_size: int = 16,
    unsigned_activations: bool = True,
    reduce_range: bool = True,
) -> Path:
    """Static int8 quantisation (QDQ, per-channel weights, MinMax calibration) of an exported graph.

    Convolutions, fully connected layers and residual additions are quantised; the L2 normalisation,
    the distance and the threshold stay float32. Either graph mode works. Activations are uint8 and
    weights int8 (U8S8), which x86 CPUs without VNNI run about twice as fast as S8S8 (measured on an
    AVX2 EPYC, ResNet18 at 128 px); ``reduce_range`` (7-bit weights) avoids the saturation of that
    U8S8 path.

    Args:
        onnx_path: an fp32 graph written by :func:`export_onnx`.
        out_path: the int8 ``.onnx`` file to write (atomically).
        calibration_patches: (N, 1, S, S) float32 normalised training patches (tested side).
        reference_patches: (N, 1, S, S) float32 references of those patches; by default the calibration
            patches in another order.
        per_channel: per-output-channel weight scales.
        op_types: operator types to quantise.
        batch_size: patches per calibration batch.
        unsigned_activations: uint8 activations (else int8).
        reduce_range: quantise weights to 7 bits.

    Returns:
        ``out_path``.

    Raises:
        PcbsiamError: no or badly shaped calibration patches.
    """
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quant_pre_process, quantize_static

    onnx_path = Path(onnx_path)
    meta = read_metadata(onnx_path)
    size = int(meta.get("input_size", 0))
    patches = np.ascontiguousarray(calibration_patches, dtype=np.float32)
    if patches.ndim != 4 or patches.shape[1:] != (1, size, size) or not len(patches):
        raise PcbsiamError(
            f"calibration patches must be a non-empty (N, 1, {size}, {size}) array, got shape {patches.shape}"
        )
    refs = np.roll(patches, 1, axis=0) if reference_patches is None else np.asarray(reference_patches, np.float32)
    if refs.shape != patches.shape:
        raise PcbsiamError(f"reference patches have shape {refs.shape}, the calibration patches {patches.shape}")
    feeds = _calibration_feeds(onnx_path, patches, refs, batch_size)
    with (
        tempfile.TemporaryDirectory(prefix="pcbsiam-quant-") as tmpdir,
        atomic_path(out_path) as tmp,
        _quiet_logging(),
    ):
        pre = Path(tmpdir) / "pre.onnx"
        quant_pre_process(str(onnx_path), str(pre), skip_symbolic_shape=True)
        quantize_static(
            str(pre),
            str(tmp),
            _PatchReader(feeds),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=list(op_types),
            per_channel=per_channel,
            reduce_range=reduce_range,
            activation_type=QuantType.QUInt8 if unsigned_activations else QuantType.QInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
        )
        proto = onnx.load(str(tmp))
        onnx.helper.set_model_props(
            proto,
            {
                **{f"pcbsiam.{k}": v for k, v in meta.items()},
                "pcbsiam.quantization": f"qdq {'u8' if unsigned_activations else 's8'}s8 per-channel={per_channel}",
            },
        )
        onnx.save(proto, str(tmp))
        onnx.checker.check_model(str(tmp))
    return Path(out_path)


@contextlib.contextmanager
def _quiet_logging() -> Iterator[None]:
    """Silence INFO records (onnxruntime's quantiser logs one per tensor on the root logger)."""
    previous = logging.root.manager.disable
    logging.disable(max(previous, logging.INFO))
    try:
        yield
    finally:
        logging.disable(previous)


def data_patches(
    bundle: Bundle,
    root: str | Path,
    split: str | Path = "trainval.txt",
    n: int = 256,
    seed: int = 0,
    cache_dir: str | Path | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` random protocol patches of a data set, as the network sees them (e.g. for int8 calibration).

    Returns:
        tested (n, 1, S, S) and reference (n, 1, S, S) float32, normalised and resized to the input size.
    """
    from pcbsiam.data.sources import load_patch_data
    from pcbsiam.data.torchdata import PatchCropper
    from pcbsiam.data.transforms import to_tensor

    data = load_patch_data(root, split, bundle.cfg.data.patch, bundle.cfg.data.stride, cache_dir=cache_dir)
    if not len(data.index):
        raise PcbsiamError(f"no patches found in {root} ({split}); check --data and --split")
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(data.index), size=min(n, len(data.index)), replace=False)
    crops = PatchCropper(data.store, data.index, bundle.cfg.data.context)
    size = bundle.cfg.model.input_size
    tested = to_tensor([crops.tested(int(i)) for i in chosen], size).numpy()
    reference = to_tensor([crops.reference(int(i)) for i in chosen], size).numpy()
    return tested, reference
