"""Inference engines: one interface over PyTorch, ONNX Runtime fp32 and int8."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from pcbsiam.deploy.backends import ENGINES, OrtEngine, TorchEngine, make_engine  # noqa: E402
from pcbsiam.deploy.bundle import Bundle, load_bundle  # noqa: E402
from pcbsiam.deploy.export import export_onnx  # noqa: E402
from pcbsiam.errors import PcbsiamError  # noqa: E402
from tests.conftest import make_tiny_bundle  # noqa: E402

SIZE = 32


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Bundle:
    return load_bundle(make_tiny_bundle(tmp_path_factory.mktemp("b") / "tiny.bundle"))


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("engines")


@pytest.fixture(scope="module")
def patches() -> np.ndarray:
    return np.random.default_rng(0).standard_normal((6, 1, SIZE, SIZE), dtype=np.float32)


@pytest.fixture(scope="module")
def engines(bundle: Bundle, workdir: Path, patches: np.ndarray) -> dict:
    return {name: make_engine(name, bundle, workdir, calibration_patches=patches) for name in ENGINES}


def test_every_engine_embeds_to_unit_vectors(engines: dict, patches: np.ndarray, bundle: Bundle) -> None:
    for name, engine in engines.items():
        assert engine.name == name
        assert engine.threshold == pytest.approx(bundle.threshold)
        assert engine.input_size == SIZE
        for n in (1, 5):
            emb = engine.embed(patches[:n])
            assert emb.shape == (n, 8) and emb.dtype == np.float32
            np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-3)


def test_fp32_engine_matches_torch(engines: dict, patches: np.ndarray) -> None:
    ref = engines["torch"].embed(patches)
    np.testing.assert_allclose(engines["onnx-fp32"].embed(patches), ref, atol=1e-4)
    d_torch, v_torch = engines["torch"].compare(patches, patches[::-1])
    d_onnx, v_onnx = engines["onnx-fp32"].compare(patches, patches[::-1])
    np.testing.assert_allclose(d_onnx, d_torch, atol=1e-4)
    assert v_onnx.dtype == np.bool_ and v_onnx.tolist() == v_torch.tolist()
    dist, _ = engines["onnx-int8"].compare(patches, patches[::-1])
    assert dist.shape == (6,) and np.isfinite(dist).all()


def test_onnx_files_are_reused_for_the_same_bundle(bundle: Bundle, workdir: Path, patches: np.ndarray) -> None:
    before = {p: p.stat().st_mtime_ns for p in workdir.glob("*.onnx")}
    assert len(before) == 2  # fp32 and int8 of the module's engines
    make_engine("onnx-int8", bundle, workdir, calibration_patches=patches)
    assert {p: p.stat().st_mtime_ns for p in workdir.glob("*.onnx")} == before


def test_session_threads_follow_torch(engines: dict) -> None:
    opts = engines["onnx-fp32"].session.get_session_options()
    assert opts.intra_op_num_threads == torch.get_num_threads()


def test_patches_graph_engine(bundle: Bundle, tmp_path: Path, patches: np.ndarray) -> None:
    engine = OrtEngine(export_onnx(bundle, tmp_path / "p.onnx", graph="patches"))
    assert engine.graph == "patches" and engine.name == "onnx-fp32"
    np.testing.assert_allclose(engine.embed(patches), TorchEngine(bundle).embed(patches), atol=1e-4)
    with pytest.raises(PcbsiamError, match="patches"):
        engine.compare_embeddings(patches, np.zeros((6, 8), np.float32))


def test_bad_names_and_missing_inputs_are_sentences(bundle: Bundle, tmp_path: Path) -> None:
    with pytest.raises(PcbsiamError, match="unknown engine"):
        make_engine("tensorrt", bundle, tmp_path)
    with pytest.raises(PcbsiamError, match="calibration patches"):
        make_engine("onnx-int8", bundle, tmp_path)
    with pytest.raises(PcbsiamError, match="not found"):
        OrtEngine(tmp_path / "missing.onnx")


def test_engine_for_takes_torch_or_a_graph_of_this_bundle_only(
    bundle: Bundle, engines: dict, workdir: Path, tmp_path: Path
) -> None:
    from pcbsiam.deploy.backends import engine_for, engine_kind
    from pcbsiam.errors import ConfigError

    assert engine_for("torch", bundle) is None and engine_for(None, bundle) is None
    fp32, int8 = engines["onnx-fp32"].path, engines["onnx-int8"].path
    assert (engine_kind(fp32), engine_kind(int8)) == ("onnx-fp32", "onnx-int8")
    engine = engine_for(int8, bundle, threads=1)
    assert engine is not None and engine.name == "onnx-int8"
    with pytest.raises(ConfigError, match="neither 'torch' nor an ONNX file.*pcbsiam export"):
        engine_for(tmp_path / "nope.onnx", bundle)
    other = load_bundle(make_tiny_bundle(tmp_path / "other.bundle", threshold=0.25))
    with pytest.raises(PcbsiamError, match="exported from another bundle"):
        engine_for(fp32, other)
