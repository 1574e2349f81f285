"""ONNX export of a calibrated bundle of any mode, its verification against PyTorch, and int8 quantisation.

Two graphs, both with the threshold inside and a dynamic batch axis N:

* ``patches`` (every mode): inputs ``tested`` (N, 1, S, S) and ``reference`` (N, 1, S, S) float32
  (normalised as :func:`pcbsiam.data.transforms.to_tensor` does). The whole network is inside,
  including the tolerance-band channel of a ``stack`` model with ``model.band``.
* ``embeddings`` (models whose encoding is one embedding vector, ``PairModel.embeds``: the paper's
  mode): inputs ``tested`` (N, 1, S, S) and ``reference_embedding`` (N, D), for a service that embeds
  a known board's reference tiles once.

Outputs: ``score`` (N,) float32 (the model's score: an L2 distance or a logit), ``defective`` (N,) bool,
and, for embedding models, ``embedding`` (N, D) of the tested patches. The graph's metadata
(``pcbsiam.*``) holds the graph kind, the model's mode and score name, the threshold, the backbone and
the patch geometry (:class:`pcbsiam.data.crops.PatchSpec`), so a runtime cuts the same crops.
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

from pcbsiam.deploy.bundle import Bundle
from pcbsiam.errors import PcbsiamError
from pcbsiam.io import atomic_path
from pcbsiam.models import PairModel

if TYPE_CHECKING:
    import onnxruntime

GRAPHS = ("patches", "embeddings")
#: Largest embedding difference between ONNX Runtime and PyTorch that verification accepts.
EMBEDDING_TOL = 1e-4
#: Largest score difference accepted, relative to max(1, |score|).
SCORE_TOL = 1e-4
#: Verdicts may differ only for scores this close to the threshold.
THRESHOLD_BAND = 1e-5
#: Operators quantised by :func:`quantize_int8`; normalisation, the band channel and the score stay float32.
INT8_OPS = ("Conv", "Gemm", "MatMul", "Add")


class PatchGraph(nn.Module):
    """Export wrapper of the ``patches`` graph: two patch batches in, scores and verdicts out."""

    def __init__(self, model: PairModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, tested: torch.Tensor, reference: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(N, 1, S, S), (N, 1, S, S) -> score (N,), defective (N,) bool[, embedding (N, D)]."""
        if self.model.embeds:
            emb = self.model.encode(tested)
            score = self.model.compare(emb, self.model.encode(reference))
            return score, score > self.model.threshold, emb
        score = self.model.score_pairs(tested, reference).float()
        return score, score > self.model.threshold


class EmbeddingGraph(nn.Module):
    """Export wrapper of the ``embeddings`` graph: tested patches and precomputed reference embeddings."""

    def __init__(self, model: PairModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, tested: torch.Tensor, reference_embedding: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(N, 1, S, S), (N, D) -> score (N,), defective (N,) bool, embedding (N, D)."""
        emb = self.model.encode(tested)
        score = self.model.compare(emb, reference_embedding)
        return score, score > self.model.threshold, emb


def _check_graph(graph: str, model: PairModel) -> None:
    if graph not in GRAPHS:
        raise PcbsiamError(f"unknown ONNX graph {graph!r}; choose one of {', '.join(GRAPHS)}")
    if graph == "embeddings" and not model.embeds:
        raise PcbsiamError(
            f"the {model.mode!r} mode has no single embedding per patch to precompute: export the `patches` graph"
        )


def _cpu_model(bundle: Bundle) -> PairModel:
    if np.isnan(bundle.threshold):
        raise PcbsiamError("the model has no threshold: run `pcbsiam calibrate` to make a bundle before exporting")
    return copy.deepcopy(bundle.model).cpu().float().eval()


def graph_inputs(graph: str) -> tuple[str, str]:
    """Input names of a ``patches`` or ``embeddings`` graph."""
    return ("tested", "reference") if graph == "patches" else ("tested", "reference_embedding")


def graph_outputs(model: PairModel) -> tuple[str, ...]:
    """Output names of the graphs of ``model``."""
    return ("score", "defective", "embedding") if model.embeds else ("score", "defective")


def export_onnx(bundle: Bundle, path: str | Path, graph: str = "patches", opset: int = 17, verify: bool = True) -> Path:
    """Export the bundle's network as an ONNX graph (see the module docstring) and verify it.

    Uses the TorchScript-based ``torch.onnx.export`` (``dynamo=False``): the default dynamo exporter of
    torch 2.14 needs the ``onnxscript`` package, which pcbsiam does not depend on.

    Args:
        bundle: a calibrated bundle of any mode (its threshold goes into the graph).
        path: the ``.onnx`` file to write (atomically: only a verified graph appears there).
        graph: ``patches`` or ``embeddings``.
        opset: ONNX opset version.
        verify: run :func:`verify_onnx` before the file is put in place.

    Returns:
        ``path``.

    Raises:
        PcbsiamError: no threshold, an unknown graph or one the mode has not, or a graph that does not
            match PyTorch.
    """
    import onnx

    model = _cpu_model(bundle)
    _check_graph(graph, model)
    inputs, outputs = graph_inputs(graph), graph_outputs(model)
    spec = bundle.spec
    size, dim = spec.input_size, bundle.cfg.model.embedding_dim
    wrapper = PatchGraph(model) if graph == "patches" else EmbeddingGraph(model)
    example = (
        torch.zeros(2, 1, size, size),
        torch.zeros(2, 1, size, size) if graph == "patches" else torch.zeros(2, dim),
    )
    axes = {name: {0: "N"} for name in (*inputs, *outputs)}
    with atomic_path(path) as tmp:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(
                wrapper,
                example,
                str(tmp),
                input_names=list(inputs),
                output_names=list(outputs),
                dynamic_axes=axes,
                opset_version=opset,
                do_constant_folding=True,
                dynamo=False,
            )
        proto = onnx.load(str(tmp))
        meta = {
            "graph": graph,
            "mode": model.mode,
            "score": model.score_name,
            "score_label": model.score_label,
            "threshold": repr(bundle.threshold),
            "backbone": bundle.cfg.model.backbone,
            "views": str(bundle.cfg.model.views),
            **({"embedding_dim": str(dim)} if model.embeds else {}),
            **spec.to_metadata(),
        }
        onnx.helper.set_model_props(proto, {f"pcbsiam.{k}": v for k, v in meta.items()})
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
def _torch_outputs(model: PairModel, tested: np.ndarray, reference: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """PyTorch scores (N,) of patch pairs, and the tested embeddings (N, D) for embedding models."""
    t = torch.from_numpy(np.ascontiguousarray(tested, dtype=np.float32))
    r = torch.from_numpy(np.ascontiguousarray(reference, dtype=np.float32))
    if model.embeds:
        emb_t, emb_r = model.encode(t), model.encode(r)
        return model.compare(emb_t, emb_r).float().numpy(), emb_t.float().numpy()
    return model.score_pairs(t, r).float().numpy(), None


def compare_with_torch(bundle: Bundle, onnx_path: str | Path, tested: np.ndarray, reference: np.ndarray) -> dict:
    """Run the same patch pairs through an exported graph (fp32 or int8) and through PyTorch.

    Args:
        tested: (N, 1, S, S) float32 normalised patches.
        reference: (N, 1, S, S) float32 normalised patches.

    Returns:
        n, threshold, max_score_error (relative to max(1, |score|)), max_embedding_error (embedding
        models), verdict_agreement (share of equal verdicts), disagreements (verdicts that differ
        although the PyTorch score is at least ``THRESHOLD_BAND`` away from the threshold).
    """
    model = _cpu_model(bundle)
    graph = read_metadata(onnx_path).get("graph", "patches")
    score_t, emb_t = _torch_outputs(model, tested, reference)
    thr = bundle.threshold
    if graph == "embeddings":
        with torch.inference_mode():
            second = model.encode(torch.from_numpy(np.ascontiguousarray(reference, np.float32))).float().numpy()
    else:
        second = reference
    feed = dict(zip(graph_inputs(graph), (tested.astype(np.float32), second.astype(np.float32)), strict=True))
    outs = ort_session(onnx_path).run(list(graph_outputs(model)), feed)
    score_o, defective_o = outs[0], outs[1]
    differ = defective_o.astype(bool) != (score_t > thr)
    scale = np.maximum(1.0, np.abs(score_t))
    report = {
        "n": int(len(tested)),
        "threshold": thr,
        "score": model.score_name,
        "max_score_error": float((np.abs(score_o - score_t) / scale).max(initial=0.0)),
        "verdict_agreement": float(1.0 - differ.mean()) if len(differ) else 1.0,
        "disagreements": int((differ & (np.abs(score_t - thr) >= THRESHOLD_BAND)).sum()),
    }
    if emb_t is not None:
        report["max_embedding_error"] = float(np.abs(outs[2] - emb_t).max(initial=0.0))
    return report


def verify_onnx(bundle: Bundle, onnx_path: str | Path, n: int = 4, seed: int = 0) -> dict:
    """Check an exported fp32 graph: ``onnx.checker``, then parity with PyTorch on ``n`` random pairs.

    Returns:
        The :func:`compare_with_torch` figures.

    Raises:
        PcbsiamError: the checker fails, scores differ by more than ``SCORE_TOL`` (relative) or
            embeddings by more than ``EMBEDDING_TOL``, or a verdict differs away from the threshold.
    """
    import onnx

    try:
        onnx.checker.check_model(str(onnx_path))
    except onnx.checker.ValidationError as exc:
        raise PcbsiamError(f"the exported graph {onnx_path} is not valid ONNX: {exc}") from exc
    rng = np.random.default_rng(seed)
    size = bundle.spec.input_size
    tested, reference = rng.standard_normal((2, n, 1, size, size), dtype=np.float32)
    report = compare_with_torch(bundle, onnx_path, tested, reference)
    emb_err = report.get("max_embedding_error", 0.0)
    if report["max_score_error"] > SCORE_TOL or emb_err > EMBEDDING_TOL or report["disagreements"]:
        raise PcbsiamError(
            f"the exported graph does not match PyTorch: scores differ by up to {report['max_score_error']:.2e} "
            f"(tolerance {SCORE_TOL:.0e}), embeddings by up to {emb_err:.2e} (tolerance {EMBEDDING_TOL:.0e}) and "
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
    meta = read_metadata(onnx_path)
    graph = meta.get("graph", "patches")
    names = graph_inputs(graph)
    if graph == "embeddings":
        sess = ort_session(onnx_path)
        dim = int(meta["embedding_dim"])
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

    Convolutions, fully connected layers and residual additions are quantised; the input channels
    (difference, tolerance band), the L2 normalisation, the score and the threshold stay float32.
    Either graph works. Activations are uint8 and
    weights int8 (U8S8), which x86 CPUs without VNNI run about twice as fast as S8S8 (measured on an
    AVX2 EPYC, ResNet18 at 128 px); ``reduce_range`` (7-bit weights) avoids the saturation of that
    U8S8 path.

    Args:
        onnx_path: an fp32 graph written by :func:`export_onnx`.
        out_path: the int8 ``.onnx`` file to write (atomically).
        calibration_patches: (N, 1, S, S) float32 normalised training patches (tested side).
        reference_patches: (N, 1, S, S) float32 references of those patches (give them for models that
            compare a pair inside the graph); by default the calibration patches in another order.
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
    return quantize_feeds(onnx_path, out_path, feeds, per_channel, op_types, unsigned_activations, reduce_range)


def quantize_feeds(
    onnx_path: str | Path,
    out_path: str | Path,
    feeds: list[dict[str, np.ndarray]],
    per_channel: bool = True,
    op_types: Sequence[str] = INT8_OPS,
    unsigned_activations: bool = True,
    reduce_range: bool = True,
) -> Path:
    """Static int8 quantisation (QDQ, MinMax calibration) of any pcbsiam graph from its calibration batches.

    The settings are :func:`quantize_int8`'s; the graph's ``pcbsiam.*`` metadata is kept and the
    quantisation is added to it.

    Args:
        onnx_path: an fp32 graph.
        out_path: the int8 ``.onnx`` file to write (atomically).
        feeds: calibration batches, each a dict from the graph's input names to arrays.
        per_channel, op_types, unsigned_activations, reduce_range: as :func:`quantize_int8`.

    Returns:
        ``out_path``.

    Raises:
        PcbsiamError: no calibration batch.
    """
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quant_pre_process, quantize_static

    if not feeds:
        raise PcbsiamError("int8 quantisation needs at least one calibration batch")
    meta = read_metadata(onnx_path)
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
    """``n`` random protocol patches of a data set, cut as the bundle's spec says (e.g. for int8 calibration).

    Returns:
        tested (n, 1, S, S) and reference (n, 1, S, S) float32, normalised and resized to the input size.
    """
    from pcbsiam.data.datasets import PairDataset
    from pcbsiam.data.sources import load_patch_data
    from pcbsiam.data.store import register_store

    spec = bundle.spec
    data = load_patch_data(root, split, spec.patch, spec.stride, cache_dir=cache_dir)
    if not len(data.index):
        raise PcbsiamError(f"no patches found in {root} ({split}); check --data and --split")
    if spec.register:
        register_store(data.store, local_shift=spec.local_shift)
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(data.index), size=min(n, len(data.index)), replace=False)
    pairs = PairDataset(data.store, data.index, spec)
    items = [pairs[int(i)] for i in chosen]
    tested = torch.stack([t for t, _, _, _ in items]).numpy()
    reference = torch.stack([r for _, r, _, _ in items]).numpy()
    return tested, reference
