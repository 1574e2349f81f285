"""Inference benchmark: keys and positive figures (no timing assertions)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pcbsiam.cli import main as cli
from pcbsiam.cli.deploy import register
from pcbsiam.deploy.bench import (
    bench_infer,
    flops_per_patch,
    format_infer_table,
    matmul_peak_gflops,
    synthetic_patches,
    untrained_bundle,
)
from pcbsiam.deploy.bundle import load_bundle
from tests.conftest import make_tiny_bundle

KEYS = {
    "backbone",
    "trained",
    "engine",
    "batch_size",
    "input_size",
    "patches_per_s",
    "boards_per_s",
    "gflop_per_patch",
    "gflops",
    "peak_gflops",
    "peak_fraction",
    "threads",
    "load_avg",
}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_matmul_peak_is_positive() -> None:
    assert matmul_peak_gflops(seconds=0.05, n=64) > 0


def test_flops_of_a_forward_pass() -> None:
    b = untrained_bundle("resnet18")
    assert b.cfg.model.backbone == "resnet18" and b.threshold == 1.0
    flops = flops_per_patch(b.model, 32)
    # ResNet18 at 32 px is about 0.15 GFLOP plus the fusion head's fc layers
    assert 5e7 < flops < 1e9


def test_synthetic_patches_are_network_inputs() -> None:
    x = synthetic_patches(30, 128, 32, seed=1)
    assert x.shape == (30, 1, 32, 32) and x.dtype == np.float32 and x.std() > 0


def test_bench_infer_rows(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    bundle = load_bundle(make_tiny_bundle(tmp_path / "tiny.bundle"))
    calib = np.random.default_rng(0).standard_normal((8, 1, 32, 32), dtype=np.float32)
    seen: list[dict] = []
    rows = bench_infer(
        bundle,
        ["torch", "onnx-fp32", "onnx-int8"],
        (1, 2),
        seconds=0.01,
        workdir=tmp_path / "w",
        calibration_patches=calib,
        peak_gflops=10.0,
        progress=seen.append,
    )
    assert rows == seen
    assert [(r["engine"], r["batch_size"]) for r in rows] == [
        (e, b) for e in ("torch", "onnx-fp32", "onnx-int8") for b in (1, 2)
    ]
    for r in rows:
        assert set(r) == KEYS
        assert r["trained"] is True and r["backbone"] == "resnet18" and r["input_size"] == 32
        for key in ("patches_per_s", "boards_per_s", "gflop_per_patch", "gflops", "peak_fraction"):
            assert r[key] > 0, key
        # the tiny bundle cuts 64 px tiles: 100 of them cover a 640 px board
        assert r["boards_per_s"] == pytest.approx(r["patches_per_s"] / 100, rel=0.05, abs=1e-3)
    table = format_infer_table(rows)
    assert table.count("\n") == 2 + len(rows) and "| resnet18 | onnx-int8 | 2 |" in table


def test_bench_infer_untrained_backbone() -> None:
    rows = bench_infer("resnet18", ["torch"], [1], seconds=0.01, peak_gflops=10.0)
    assert len(rows) == 1 and rows[0]["trained"] is False and rows[0]["input_size"] == 128
    assert rows[0]["gflop_per_patch"] > 0.5 and "(untrained)" in format_infer_table(rows)


def test_cli_bench_infer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    if register not in cli._EXTRA:
        monkeypatch.setattr(cli, "_EXTRA", [*cli._EXTRA, register])
    model = make_tiny_bundle(tmp_path / "tiny.bundle")
    out = tmp_path / "rows.json"
    argv = [
        "bench",
        "infer",
        "--model",
        str(model),
        "--engines",
        "torch",
        "--batch-sizes",
        "1,2",
        "--seconds",
        "0.01",
        "--peak-seconds",
        "0.05",
        "--json",
        str(out),
    ]
    assert cli.main(argv) == 0
    table = capsys.readouterr().out
    assert table.startswith("| backbone | engine |") and "GEMM peak" in table
    assert [r["batch_size"] for r in json.loads(out.read_text())] == [1, 2]
    assert cli.main(["bench", "infer", "--engines", "torch,gpu"]) == 2
    assert "unknown engine" in capsys.readouterr().err
    assert cli.main(["bench", "infer", "--batch-sizes", "1,x"]) == 2
    assert cli.main(["bench", "infer", "--backbones", "vgg16"]) == 2
    assert "unknown backbone" in capsys.readouterr().err


@pytest.mark.parametrize("engine", ["torch", "onnx-fp32", "onnx-int8"])
def test_bench_inspect_times_every_stage_beside_the_classical_method(
    engine: str, tiny_deeppcb: Path, tmp_path: Path
) -> None:
    from pcbsiam.deploy.bench import STAGES, bench_inspect
    from pcbsiam.deploy.bundle import load_bundle
    from tests.conftest import make_tiny_bundle

    pytest.importorskip("onnxruntime")
    bundle = load_bundle(
        make_tiny_bundle(tmp_path / "s.bundle", patch=32, overrides=["model.mode=stack", "model.band=2"])
    )
    row = bench_inspect(bundle, tiny_deeppcb, engine=engine, boards=3, warmup=1, peak_seconds=0.05)
    assert row["boards"] == 3 and row["tiles"] == 3 * 9 and row["engine"] == engine and row["mode"] == "stack"
    assert row["boards_per_s"] > 0 and row["classical_boards_per_s"] > 0 and row["ratio_to_classical"] > 0
    assert set(row["stage_share"]) == set(STAGES) and sum(row["stage_share"].values()) == pytest.approx(1, abs=0.01)
    assert row["network_share_of_peak"] > 0
    if engine == "onnx-int8":  # int8 is measured against its own roof too
        assert row["int8_peak_gops"] > 0 and row["network_share_of_int8_peak"] > 0
    if engine == "torch":  # with a detector, its boxes are a stage of the inspection
        from pcbsiam.detection.factory import make_detector

        classical = make_detector("classical")
        found = bench_inspect(bundle, tiny_deeppcb, boards=2, warmup=0, peak_seconds=0.05, detector=classical)
        assert found["detector"] == "ClassicalDetector" and found["stage_share"]["detect"] > 0
        assert row["detector"] is None and "detect" not in row["stage_share"]
