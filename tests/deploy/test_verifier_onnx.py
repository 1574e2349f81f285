"""The learned detector's verifier through ONNX Runtime: export, int8, and the engine in place of PyTorch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from pcbsiam.data.deeppcb import read_deeppcb
from pcbsiam.data.images import load_gray
from pcbsiam.deploy.export import read_metadata
from pcbsiam.deploy.verifier import (
    VERIFIER_GRAPH,
    OrtVerifier,
    calibration_windows,
    class_agreement,
    export_verifier,
    onnx_detector,
    quantize_verifier,
    verifier_fingerprint,
)
from pcbsiam.detection.learned import LearnedDetector, WindowSpec
from pcbsiam.errors import PcbsiamError
from pcbsiam.models.detector import CandidateNet, VerifierConfig


def _net(seed: int = 0, rule_types: bool = True) -> CandidateNet:
    torch.manual_seed(seed)
    return CandidateNet(VerifierConfig(input_size=32, hidden_dim=16, rule_types=rule_types)).eval()


def _boards(synth_root: Path) -> list[tuple[np.ndarray, np.ndarray]]:
    return [(load_gray(p.tested), load_gray(p.template)) for p in read_deeppcb(synth_root).pairs if len(p.boxes)]


@pytest.fixture(scope="module")
def graph(tmp_path_factory: pytest.TempPathFactory) -> tuple[CandidateNet, Path]:
    net = _net()
    return net, export_verifier(net, tmp_path_factory.mktemp("verifier") / "v.onnx")


@pytest.mark.parametrize("rule_types", [True, False])
def test_the_graph_gives_the_networks_verdicts(tmp_path: Path, rule_types: bool) -> None:
    net = _net(rule_types=rule_types)
    engine = OrtVerifier(export_verifier(net, tmp_path / "v.onnx"))
    assert engine.cfg == net.cfg and engine.name == "onnx-fp32"
    assert ("rule_types" in engine.inputs) == rule_types
    t, r = torch.rand(5, 1, 32, 32), torch.rand(5, 1, 32, 32)
    hints = torch.tensor([0, 1, 2, 3, 6])
    with torch.inference_mode():
        want = net(t, r, hints)
    got = engine(t, r, hints)
    for a, b in zip(want, got, strict=True):
        torch.testing.assert_close(b, a, atol=1e-4, rtol=1e-4)
    if rule_types:
        with pytest.raises(ValueError, match="give rule_types"):
            engine(t, r)


def test_the_graph_names_its_network(graph: tuple[CandidateNet, Path]) -> None:
    net, path = graph
    meta = read_metadata(path)
    assert meta["graph"] == VERIFIER_GRAPH and meta["fingerprint"] == verifier_fingerprint(net)
    assert verifier_fingerprint(_net(seed=1)) != verifier_fingerprint(net)


def test_a_missing_file_or_another_graph_is_refused(tmp_path: Path) -> None:
    with pytest.raises(PcbsiamError, match="not found"):
        OrtVerifier(tmp_path / "none.onnx")
    other = tmp_path / "other.onnx"
    torch.onnx.export(torch.nn.Linear(2, 2), (torch.zeros(1, 2),), str(other), dynamo=False)
    with pytest.raises(PcbsiamError, match="not a detector's verifier graph"):
        OrtVerifier(other)
    with pytest.raises(PcbsiamError, match="not a detector's verifier graph"):
        quantize_verifier(other, tmp_path / "q.onnx", [{"x": np.zeros((1, 2), np.float32)}])


def test_the_onnx_detector_finds_what_the_torch_one_finds(graph: tuple[CandidateNet, Path], synth_root: Path) -> None:
    net, path = graph
    torch_detector = LearnedDetector(net, WindowSpec(), views=2, min_confidence=0.0, rule_families=())
    ort_detector = onnx_detector(torch_detector, path)
    assert isinstance(ort_detector.net, OrtVerifier) and torch_detector.net is net  # a copy; the original keeps torch
    for tested, template in _boards(synth_root)[:2]:
        want, got = torch_detector.detect(tested, template), ort_detector.detect(tested, template)
        assert len(want) > 0
        np.testing.assert_array_equal(got.types, want.types)
        np.testing.assert_allclose(got.scores, want.scores, atol=1e-4)
        np.testing.assert_allclose(got.boxes, want.boxes, atol=1e-2)


def test_the_onnx_detector_refuses_another_verifiers_graph_and_ensembles(graph: tuple[CandidateNet, Path]) -> None:
    net, path = graph
    with pytest.raises(PcbsiamError, match="another verifier"):
        onnx_detector(LearnedDetector(_net(seed=1), WindowSpec()), path)
    with pytest.raises(PcbsiamError, match="one --model"):
        onnx_detector(LearnedDetector([net, net], WindowSpec()), path)


def test_int8_is_calibrated_on_candidate_windows_and_stays_close(
    graph: tuple[CandidateNet, Path], synth_root: Path, tmp_path: Path
) -> None:
    net, path = graph
    detector = LearnedDetector(net, WindowSpec())
    feeds = calibration_windows(detector, _boards(synth_root))
    assert feeds and set(feeds[0]) == {"tested", "reference", "rule_types"}
    assert feeds[0]["tested"].shape[1:] == (1, 32, 32) and feeds[0]["rule_types"].dtype == np.int64
    int8 = OrtVerifier(quantize_verifier(path, tmp_path / "v-int8.onnx", feeds))
    assert int8.name == "onnx-int8" and int8.fingerprint == verifier_fingerprint(net)
    f = feeds[0]
    args = (torch.from_numpy(f["tested"]), torch.from_numpy(f["reference"]), torch.from_numpy(f["rule_types"]))
    with torch.inference_mode():
        want = net(*args).logits.softmax(1)
    got = int8(*args).logits.softmax(1)
    assert got.shape == want.shape and float((got - want).abs().max()) < 0.2
    exact = class_agreement(net, path, feeds)  # the fp32 graph: PyTorch's classes
    assert exact["same_class"] == 1.0 and exact["max_probability_difference"] < 1e-4
    close = class_agreement(net, tmp_path / "v-int8.onnx", feeds)
    assert 0.0 <= close["same_class"] <= 1.0 and close["max_probability_difference"] < 0.2
    with pytest.raises(PcbsiamError, match="no candidate window"):
        quantize_verifier(path, tmp_path / "none.onnx", [])


def test_an_inspection_runs_the_graph_in_place_of_the_learned_verifier(
    graph: tuple[CandidateNet, Path], tmp_path: Path
) -> None:
    from pcbsiam.deploy.inspector import make_inspection_detector
    from pcbsiam.detection.learned import save_detector
    from pcbsiam.errors import ConfigError

    net, path = graph
    save_detector(tmp_path / "detector.pt", net, WindowSpec(), {})
    assert isinstance(make_inspection_detector(tmp_path / "detector.pt").net, CandidateNet)
    assert isinstance(make_inspection_detector(tmp_path / "detector.pt", engine="torch").net, CandidateNet)
    assert isinstance(make_inspection_detector(tmp_path / "detector.pt", engine=path).net, OrtVerifier)
    for spec in ("classical", None):
        with pytest.raises(ConfigError, match="give --detector PATH"):
            make_inspection_detector(spec, engine=path)
