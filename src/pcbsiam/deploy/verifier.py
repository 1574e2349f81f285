"""The learned detector's verifier through ONNX Runtime: export, int8 quantisation and the engine.

The verifier (:class:`~pcbsiam.models.detector.CandidateNet`) scores every candidate window of a board once
per test-time view; on a CPU, ONNX Runtime runs it faster than PyTorch's eager mode, and its int8 graph
faster still (docs/RESULTS.md). The graph takes ``tested`` and ``reference`` (N, 1, S, S) float32 windows,
normalised as :func:`pcbsiam.data.transforms.to_tensor` does, and, for a verifier that reads the classical
rules' types, ``rule_types`` (N,) int64; it gives ``logits`` (N, 1 + types) and ``deltas`` (N, 4), as the
network does. Its ``pcbsiam.*`` metadata holds the network's settings and a fingerprint of its weights, so a
graph runs only in place of the verifier it was exported from.
"""

from __future__ import annotations

import copy
import hashlib
import json
import warnings
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch

from pcbsiam.data.transforms import to_tensor
from pcbsiam.deploy.export import ort_session, quantize_feeds, read_metadata
from pcbsiam.detection.learned import LearnedDetector
from pcbsiam.errors import PcbsiamError
from pcbsiam.io import atomic_path
from pcbsiam.models.detector import CandidateNet, Verdicts, VerifierConfig

__all__ = [
    "VERIFIER_GRAPH",
    "OrtVerifier",
    "calibration_windows",
    "class_agreement",
    "export_verifier",
    "onnx_detector",
    "quantize_verifier",
    "verifier_fingerprint",
]

VERIFIER_GRAPH = "verifier"
OUTPUTS = ("logits", "deltas")
#: Largest difference of a logit or a box move between ONNX Runtime and PyTorch that the export accepts.
VERIFIER_TOL = 1e-3


def verifier_fingerprint(net: CandidateNet) -> str:
    """12 hex digits identifying a verifier's settings and weights (kept in its graphs' metadata)."""
    h = hashlib.sha256(json.dumps(net.cfg.to_dict(), sort_keys=True).encode())
    for key, value in net.state_dict().items():
        h.update(key.encode())
        h.update(value.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:12]


def _inputs(cfg: VerifierConfig) -> tuple[str, ...]:
    return ("tested", "reference", "rule_types") if cfg.rule_types else ("tested", "reference")


def export_verifier(net: CandidateNet, path: str | Path, opset: int = 17, verify: bool = True) -> Path:
    """Write the verifier as an ONNX graph (see the module docstring), checked against PyTorch.

    Args:
        net: the trained verifier.
        path: the ``.onnx`` file to write (atomically: only a checked graph appears there).
        opset: ONNX opset version.
        verify: compare the graph's outputs with PyTorch's on random windows before the file is put in place.

    Returns:
        ``path``.

    Raises:
        PcbsiamError: the graph's outputs differ from PyTorch's by more than :data:`VERIFIER_TOL`.
    """
    import onnx

    net = copy.deepcopy(net).cpu().eval()
    size, names = net.cfg.input_size, _inputs(net.cfg)
    example = (torch.zeros(2, 1, size, size), torch.zeros(2, 1, size, size), torch.zeros(2, dtype=torch.int64))
    with atomic_path(path) as tmp:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notes
            torch.onnx.export(
                net,
                example[: len(names)],
                str(tmp),
                input_names=list(names),
                output_names=list(OUTPUTS),
                dynamic_axes={name: {0: "N"} for name in (*names, *OUTPUTS)},
                opset_version=opset,
                do_constant_folding=True,
                dynamo=False,
            )
        proto = onnx.load(str(tmp))
        meta = {"graph": VERIFIER_GRAPH, "net": json.dumps(net.cfg.to_dict()), "fingerprint": verifier_fingerprint(net)}
        onnx.helper.set_model_props(proto, {f"pcbsiam.{k}": v for k, v in meta.items()})
        onnx.save(proto, str(tmp))
        if verify:
            _check_against_torch(net, tmp)
    return Path(path)


@torch.inference_mode()
def _check_against_torch(net: CandidateNet, onnx_path: Path, n: int = 8, seed: int = 0) -> None:
    gen = torch.Generator().manual_seed(seed)
    size = net.cfg.input_size
    t, r = torch.rand(n, 1, size, size, generator=gen), torch.rand(n, 1, size, size, generator=gen)
    hints = torch.randint(1 + net.cfg.num_types, (n,), generator=gen)
    want = net(t, r, hints)
    got = OrtVerifier(onnx_path, threads=1)(t, r, hints)
    worst = max(float((a - b).abs().max()) for a, b in zip(want, got, strict=True))
    if worst > VERIFIER_TOL:
        raise PcbsiamError(f"the exported verifier differs from PyTorch by {worst:.2g} (more than {VERIFIER_TOL})")


class OrtVerifier:
    """A verifier graph run by ONNX Runtime on the CPU; called as :class:`CandidateNet` is.

    Args:
        onnx_path: a graph written by :func:`export_verifier` or :func:`quantize_verifier`.
        threads: intra-op threads (default ``torch.get_num_threads()``).

    Attributes:
        cfg: the exported network's settings.
        fingerprint: :func:`verifier_fingerprint` of the network it was exported from.
        name: ``onnx-fp32`` or ``onnx-int8``.

    Raises:
        PcbsiamError: the file is missing or is not a verifier graph.
    """

    def __init__(self, onnx_path: str | Path, threads: int | None = None) -> None:
        self.path = Path(onnx_path)
        if not self.path.is_file():
            raise PcbsiamError(f"verifier graph {self.path} not found: write one with `pcbsiam export-detector`")
        meta = read_metadata(self.path)
        if meta.get("graph") != VERIFIER_GRAPH:
            raise PcbsiamError(
                f"{self.path} is not a detector's verifier graph (graph {meta.get('graph')!r}); write one with "
                "`pcbsiam export-detector --model DETECTOR --onnx FILE`"
            )
        self.cfg = VerifierConfig(**json.loads(meta["net"]))
        self.fingerprint = meta["fingerprint"]
        self.name = "onnx-int8" if "quantization" in meta else "onnx-fp32"
        self.session = ort_session(self.path, threads)
        self.inputs = tuple(i.name for i in self.session.get_inputs())

    def __call__(
        self, tested: torch.Tensor, reference: torch.Tensor, rule_types: torch.Tensor | None = None
    ) -> Verdicts:
        """Verdicts of (B, 1, S, S) tested windows against their (B, 1, S, S) references (``rule_types``: (B,)
        int64, needed by a verifier that reads them); CPU tensors out."""
        feed = {"tested": tested.float().cpu().numpy(), "reference": reference.float().cpu().numpy()}
        if "rule_types" in self.inputs:
            if rule_types is None:
                raise ValueError("this verifier was trained with the classical rules' types: give rule_types")
            feed["rule_types"] = rule_types.long().cpu().numpy()
        logits, deltas = self.session.run(list(OUTPUTS), feed)
        return Verdicts(torch.from_numpy(logits), torch.from_numpy(deltas))


def calibration_windows(
    detector: LearnedDetector, boards: Iterable[tuple[np.ndarray, np.ndarray]]
) -> list[dict[str, np.ndarray]]:
    """The candidate windows of (tested, template) uint8 board pairs, as the verifier sees them: one calibration
    batch per board that has candidates, keyed by the graph's input names."""
    size = detector.net.cfg.input_size
    feeds = []
    for tested, template in boards:
        found = detector.candidates(tested, template)
        if not len(found.proposals):
            continue
        feed = {
            "tested": to_tensor(found.tested, size).numpy(),
            "reference": to_tensor(found.reference, size).numpy(),
            "rule_types": np.asarray(found.proposals.types, np.int64),
        }
        feeds.append({k: v for k, v in feed.items() if k in _inputs(detector.net.cfg)})
    return feeds


def quantize_verifier(onnx_path: str | Path, out_path: str | Path, feeds: list[dict[str, np.ndarray]]) -> Path:
    """Static int8 quantisation of a verifier graph, calibrated on :func:`calibration_windows` of training boards
    (the settings of :func:`pcbsiam.deploy.export.quantize_int8`).

    Raises:
        PcbsiamError: ``onnx_path`` is not a verifier graph, or no calibration window.
    """
    if read_metadata(onnx_path).get("graph") != VERIFIER_GRAPH:
        raise PcbsiamError(f"{onnx_path} is not a detector's verifier graph; export one with `pcbsiam export-detector`")
    if not feeds:
        raise PcbsiamError("the calibration boards gave no candidate window; give training boards with defects")
    return quantize_feeds(onnx_path, out_path, feeds)


@torch.inference_mode()
def class_agreement(net: CandidateNet, onnx_path: str | Path, feeds: list[dict[str, np.ndarray]]) -> dict[str, float]:
    """How far a graph's class probabilities lie from the network's on calibration batches (e.g. an int8 graph's):
    the share of windows given the same class, and the largest probability difference."""
    engine = OrtVerifier(onnx_path, threads=None)
    same, worst, n = 0, 0.0, 0
    for f in feeds:
        args = [torch.from_numpy(f["tested"]), torch.from_numpy(f["reference"])]
        args.append(torch.from_numpy(f["rule_types"]) if "rule_types" in f else None)
        want, got = net(*args).logits.softmax(1), engine(*args).logits.softmax(1)
        same += int((want.argmax(1) == got.argmax(1)).sum())
        worst = max(worst, float((want - got).abs().max()))
        n += len(want)
    return {"same_class": round(same / max(n, 1), 4), "max_probability_difference": round(worst, 4)}


def onnx_detector(detector: LearnedDetector, onnx_path: str | Path, threads: int | None = None) -> LearnedDetector:
    """A copy of ``detector`` whose verifier runs on ONNX Runtime from a graph exported from that verifier.

    Raises:
        PcbsiamError: the detector averages several verifiers, or the graph is not one of its verifier.
    """
    if len(detector.nets) != 1:
        raise PcbsiamError("an ONNX verifier graph replaces one verifier; give one --model with --engine")
    engine = OrtVerifier(onnx_path, threads)
    net = detector.net
    if not isinstance(net, CandidateNet) or engine.fingerprint != verifier_fingerprint(net):
        raise PcbsiamError(
            f"{onnx_path} was exported from another verifier than the detector given; export it again from this "
            "detector with `pcbsiam export-detector`"
        )
    out = copy.copy(detector)
    out.nets = (engine,)
    return out
