"""ONNX export: parity with PyTorch in both graphs and every mode, dynamic batch, verification, int8, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from pcbsiam.cli import main as cli  # noqa: E402
from pcbsiam.cli.deploy import register  # noqa: E402
from pcbsiam.deploy.backends import engine_for  # noqa: E402
from pcbsiam.deploy.bundle import Bundle, load_bundle  # noqa: E402
from pcbsiam.deploy.export import (  # noqa: E402
    EMBEDDING_TOL,
    compare_with_torch,
    data_patches,
    export_onnx,
    ort_session,
    quantize_int8,
    read_metadata,
    verify_onnx,
)
from pcbsiam.errors import PcbsiamError  # noqa: E402
from tests.conftest import make_tiny_bundle  # noqa: E402

SIZE = 32


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def pairs() -> tuple[np.ndarray, np.ndarray]:
    """Five random (tested, reference) pairs of (5, 1, 32, 32) float32."""
    rng = np.random.default_rng(3)
    tested, reference = rng.standard_normal((2, 5, 1, SIZE, SIZE), dtype=np.float32)
    return tested, reference


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory, pairs: tuple[np.ndarray, np.ndarray]) -> Bundle:
    """The tiny bundle with its threshold moved to the median distance of ``pairs`` (mixed verdicts)."""
    b = load_bundle(make_tiny_bundle(tmp_path_factory.mktemp("b") / "tiny.bundle"))
    with torch.inference_mode():
        emb = [b.model.embed(torch.from_numpy(x)) for x in pairs]
        dist = b.model.distance(*emb).numpy()
    b.model.threshold.fill_(float(np.sort(dist)[2] + 1e-3))  # between the 3rd and 4th distance
    return b


@pytest.fixture(scope="module")
def graphs(bundle: Bundle, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Both exported graphs of ``bundle``."""
    out = tmp_path_factory.mktemp("onnx")
    return {graph: export_onnx(bundle, out / f"{graph}.onnx", graph=graph) for graph in ("patches", "embeddings")}


@pytest.mark.parametrize("mode", ["patches", "embeddings"])
def test_graph_matches_torch_at_batch_1_and_5(
    mode: str, graphs: dict[str, Path], bundle: Bundle, pairs: tuple[np.ndarray, np.ndarray]
) -> None:
    path = graphs[mode]
    onnx.checker.check_model(str(path))
    tested, reference = pairs
    for n in (1, 5):
        report = compare_with_torch(bundle, path, tested[:n], reference[:n])
        assert report["n"] == n
        assert report["max_embedding_error"] <= EMBEDDING_TOL
        assert report["verdict_agreement"] == 1.0
    meta = read_metadata(path)
    assert meta["graph"] == mode and meta["mode"] == "paper" and meta["score"] == "distance"
    assert float(meta["threshold"]) == pytest.approx(bundle.threshold) and meta["input_size"] == str(SIZE)


def test_embeddings_graph_outputs(graphs: dict[str, Path], bundle: Bundle, pairs: tuple[np.ndarray, ...]) -> None:
    tested, reference = pairs
    with torch.inference_mode():
        ref_emb = bundle.model.embed(torch.from_numpy(reference)).numpy()
        tst_emb = bundle.model.embed(torch.from_numpy(tested)).numpy()
    sess = ort_session(graphs["embeddings"])
    assert [i.name for i in sess.get_inputs()] == ["tested", "reference_embedding"]
    assert [o.name for o in sess.get_outputs()] == ["score", "defective", "embedding"]
    dist, defective, emb = sess.run(None, {"tested": tested, "reference_embedding": ref_emb})
    assert dist.shape == (5,) and defective.dtype == np.bool_ and emb.shape == (5, 8)
    np.testing.assert_allclose(emb, tst_emb, atol=EMBEDDING_TOL)
    expected = np.linalg.norm(tst_emb - ref_emb, axis=1) > bundle.threshold
    assert defective.tolist() == expected.tolist()
    assert 0 < defective.sum() < 5  # the threshold splits the pairs, so verdicts are really compared


def test_export_refuses_uncalibrated_model_and_unknown_mode(bundle: Bundle, tmp_path: Path) -> None:
    raw = Bundle(type(bundle.model)(bundle.cfg.model), bundle.cfg, bundle.groups)
    with pytest.raises(PcbsiamError, match="threshold"):
        export_onnx(raw, tmp_path / "x.onnx")
    with pytest.raises(PcbsiamError, match="graph"):
        export_onnx(bundle, tmp_path / "x.onnx", graph="pairs")
    assert not list(tmp_path.iterdir())


def test_verification_failure_is_a_sentence_and_leaves_no_file(
    bundle: Bundle, graphs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = load_bundle(make_tiny_bundle(tmp_path / "other.bundle"))
    torch.manual_seed(1)
    for p in other.model.parameters():
        p.data.add_(0.5 * torch.randn_like(p))
    with pytest.raises(PcbsiamError, match="does not match PyTorch"):
        verify_onnx(other, graphs["patches"])

    import pcbsiam.deploy.export as export

    bad = {"max_score_error": 1.0, "max_embedding_error": 1.0, "disagreements": 3, "n": 4}
    monkeypatch.setattr(export, "compare_with_torch", lambda *a, **k: bad)
    with pytest.raises(PcbsiamError, match="not written"):
        export_onnx(bundle, tmp_path / "bad.onnx")
    assert not (tmp_path / "bad.onnx").exists()
    assert not list(tmp_path.glob(".bad.onnx.*"))


@pytest.mark.parametrize("mode", ["patches", "embeddings"])
def test_int8_quantisation_runs_and_reports_agreement(
    mode: str, graphs: dict[str, Path], bundle: Bundle, pairs: tuple[np.ndarray, ...], tmp_path: Path
) -> None:
    rng = np.random.default_rng(0)
    calib = rng.standard_normal((12, 1, SIZE, SIZE), dtype=np.float32)
    out = quantize_int8(graphs[mode], tmp_path / "int8.onnx", calib, batch_size=6)
    onnx.checker.check_model(str(out))
    meta = read_metadata(out)
    assert meta["graph"] == mode and "quantization" in meta
    assert {n.op_type for n in onnx.load(str(out)).graph.node} >= {"QuantizeLinear", "DequantizeLinear"}
    tested, reference = pairs
    for n in (1, 5):
        report = compare_with_torch(bundle, out, tested[:n], reference[:n])
        assert 0.0 <= report["verdict_agreement"] <= 1.0
    print(
        f"int8 {mode}: verdict agreement {report['verdict_agreement']:.2f}, "
        f"max embedding error {report['max_embedding_error']:.3f}"
    )


def test_int8_rejects_wrong_patch_shape(graphs: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(PcbsiamError, match="calibration patches"):
        quantize_int8(graphs["patches"], tmp_path / "q.onnx", np.zeros((4, 1, 16, 16), np.float32))


def test_data_patches_are_network_inputs(bundle: Bundle, tiny_deeppcb: Path) -> None:
    tested, reference = data_patches(bundle, tiny_deeppcb, "trainval.txt", n=6)
    assert tested.shape == reference.shape == (6, 1, SIZE, SIZE)
    assert tested.dtype == np.float32 and np.isfinite(tested).all()


@pytest.fixture
def deploy_cli() -> None:
    """The ``pcbsiam`` parser registers the deployment sub-commands (``export``)."""
    assert register in [group.register for group in cli.COMMAND_GROUPS]


@pytest.mark.usefixtures("deploy_cli")
def test_cli_export_with_int8(tmp_path: Path, tiny_deeppcb: Path, capsys: pytest.CaptureFixture) -> None:
    model = make_tiny_bundle(tmp_path / "m.bundle")
    out = tmp_path / "m.onnx"
    argv = [
        "export",
        "--model",
        str(model),
        "--onnx",
        str(out),
        "--mode",
        "embeddings",
        "--int8",
        "--data",
        str(tiny_deeppcb),
        "--calib-patches",
        "4",
    ]
    assert cli.main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["graph"] == "embeddings" and report["model_mode"] == "paper" and out.is_file()
    assert Path(report["int8"]["onnx"]) == tmp_path / "m-int8.onnx"
    assert 0.0 <= report["int8"]["check"]["verdict_agreement"] <= 1.0


@pytest.mark.usefixtures("deploy_cli")
def test_cli_export_errors_are_sentences(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert cli.main(["export", "--model", str(tmp_path / "none.bundle"), "--onnx", str(tmp_path / "x.onnx")]) == 2
    assert "not found" in capsys.readouterr().err
    model = make_tiny_bundle(tmp_path / "m.bundle")
    assert cli.main(["export", "--model", str(model), "--onnx", str(tmp_path / "x.onnx"), "--int8"]) == 2
    assert "--data" in capsys.readouterr().err


@pytest.mark.parametrize(
    "overrides",
    [
        ["model.mode=diff"],
        ["model.mode=stack"],
        ["model.mode=stack", "model.band=2"],
        ["model.mode=stack", "model.band=2", "model.fine_band=1"],
        ["model.mode=stack", "model.views=8"],
    ],
    ids=["diff", "stack", "stack+band", "stack+two-bands", "stack+views"],
)
def test_reference_aware_modes_export_with_parity_and_int8(
    overrides: list[str], tmp_path: Path, pairs: tuple[np.ndarray, np.ndarray]
) -> None:
    b = load_bundle(make_tiny_bundle(tmp_path / "m.bundle", overrides=overrides))
    tested, reference = pairs
    reference = np.where(np.arange(SIZE) < SIZE // 2, tested, reference)  # pairs that partly agree: band pixels vary
    with torch.inference_mode():
        scores = b.model.score_pairs(torch.from_numpy(tested), torch.from_numpy(reference)).numpy()
    b.model.threshold.fill_(float(np.sort(scores)[2] + 1e-4))  # mixed verdicts
    path = export_onnx(b, tmp_path / "m.onnx")
    sess = ort_session(path)
    assert [o.name for o in sess.get_outputs()] == ["score", "defective"]
    meta = read_metadata(path)
    assert meta["mode"] == b.cfg.model.mode and meta["score"] == "logit" and meta["graph"] == "patches"
    report = compare_with_torch(b, path, tested, reference)
    assert report["max_score_error"] <= 1e-4 and report["verdict_agreement"] == 1.0
    if b.cfg.model.band:  # the band channel is computed inside the graph: max pooling of thresholded inputs
        assert "MaxPool" in {n.op_type for n in onnx.load(str(path)).graph.node}
    with pytest.raises(PcbsiamError, match="no single embedding"):
        export_onnx(b, tmp_path / "e.onnx", graph="embeddings")
    int8 = quantize_int8(path, tmp_path / "m-int8.onnx", tested, reference, batch_size=5)
    assert 0.0 <= compare_with_torch(b, int8, tested, reference)["verdict_agreement"] <= 1.0
    views = b.cfg.model.views  # the test-time views are inside the graph: a bundle applied otherwise refuses it
    assert meta["views"] == str(views) and engine_for(path, b) is not None
    b.cfg.model.views = 1 if views > 1 else 2
    with pytest.raises(PcbsiamError, match="export it again with this setting"):
        engine_for(path, b)
