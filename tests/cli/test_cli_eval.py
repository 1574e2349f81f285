import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pcbsiam.data.crops import PatchSpec
from pcbsiam.deploy.bundle import load_bundle
from pcbsiam.evaluation.evaluate import classical_scorer, load_subset
from tests.conftest import board, run_cli


def test_calibrate_evaluate_inspect_chain(
    tiny_run: Path, synth_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    bundle = tmp_path / "m.bundle"
    code, out, _ = run_cli(
        capsys,
        "calibrate",
        "--model",
        tiny_run,
        "--data",
        synth_root,
        "--out",
        bundle,
        "--policy",
        "recall:0.9",
        "--board",
        f"ref={_first_template(synth_root)}",
    )
    assert code == 0
    info = json.loads(out)
    assert info["subset"] == "train" and info["boards"] == ["ref"]
    b = load_bundle(bundle)
    assert b.policy == "recall:0.9" and b.threshold == pytest.approx(info["threshold"], abs=1e-5)
    assert b.calibration["value"] >= 0.9

    code, out, _ = run_cli(
        capsys,
        "evaluate",
        "--model",
        bundle,
        "--model",
        bundle,
        "--data",
        synth_root,
        "--baseline",
        "--out",
        tmp_path / "eval",
    )
    assert code == 0 and "AUROC" in out and "classical" in out and "over 2 models" in out
    res = json.loads((tmp_path / "eval" / "evaluation.json").read_text())
    rep = res["models"]["m"]
    assert (
        rep["subset"] == "val"
        and rep["n"]
        == rep["confusion"]["tn"] + rep["confusion"]["fp"] + rep["confusion"]["fn"] + rep["confusion"]["tp"]
    )
    assert set(rep["by_type"]) <= {"open", "short", "mousebite", "spur", "spurious_copper", "pin_hole"}
    assert res["mean_std"]["accuracy"]["std"] == 0.0
    assert res["models"]["classical"]["policy"] == "recall:0.9"  # the baseline at the model's kind of operating point
    for png in ("roc.png", "hist_m.png", "hist_classical.png"):
        assert (tmp_path / "eval" / png).stat().st_size > 1000

    code, out, _ = run_cli(
        capsys,
        "evaluate",
        "--model",
        bundle,
        "--data",
        synth_root,
        "--engines",
        "onnx-fp32",
        "--json",
        tmp_path / "engines.json",
    )
    assert code == 0
    engines = json.loads((tmp_path / "engines.json").read_text())["models"]
    assert engines["m[onnx-fp32]"]["engine"] == "onnx-fp32"
    assert abs(engines["m[onnx-fp32]"]["accuracy"] - engines["m"]["accuracy"]) <= 1 / engines["m"]["n"]

    test_img = _first_template(synth_root).replace("_temp", "_test")
    code, out, _ = run_cli(
        capsys,
        "inspect",
        "--model",
        bundle,
        "--tested",
        test_img,
        "--template",
        _first_template(synth_root),
        "--out",
        tmp_path / "one",
        "--overlap",
        "0.5",
    )
    assert code == 0
    report = json.loads((tmp_path / "one" / "report.json").read_text())
    assert (
        report["verdict"] in ("pass", "defective") and len(report["tiles"]) == 49
    )  # 256 px, 64 px tiles, half overlap
    assert (tmp_path / "one" / "overlay.png").is_file()

    code, out, _ = run_cli(
        capsys, "inspect", "--model", bundle, "--batch", "--data", synth_root, "--out", tmp_path / "batch"
    )
    assert code == 0
    summary = json.loads((tmp_path / "batch" / "summary.json").read_text())
    assert summary["boards"] == 24 and 0 <= summary["defects_flagged_share"] <= 1
    rows = list(csv.DictReader((tmp_path / "batch" / "verdicts.csv").read_text().splitlines()))
    assert len(rows) == 24 and {"name", "verdict", "max_score", "dy", "dx"} <= set(rows[0])

    # the same batch on ONNX Runtime (an exported graph of this bundle), pipelined: the same verdicts
    code, out, _ = run_cli(capsys, "export", "--model", bundle, "--onnx", tmp_path / "m.onnx")
    assert code == 0
    code, out, _ = run_cli(
        capsys, "inspect", "--model", bundle, "--batch", "--data", synth_root, "--out", tmp_path / "onnx",
        "--engine", tmp_path / "m.onnx", "--pipeline", "on", "--threads", "1",
    )  # fmt: skip
    assert code == 0
    onnx_rows = list(csv.DictReader((tmp_path / "onnx" / "verdicts.csv").read_text().splitlines()))
    assert [r["name"] for r in onnx_rows] == [r["name"] for r in rows]
    assert [r["verdict"] for r in onnx_rows] == [r["verdict"] for r in rows]
    assert [float(r["max_score"]) for r in onnx_rows] == pytest.approx([float(r["max_score"]) for r in rows], abs=1e-3)


def _first_template(root: Path) -> str:
    return str(sorted((root / "PCBData").glob("group*/*/*_temp.jpg"))[0])


def test_inspect_refuses_bad_pairs_without_writing(
    tiny_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    Image.fromarray(board(1, 192)).save(tmp_path / "t.png")
    Image.fromarray(board(1, 128)).save(tmp_path / "r.png")
    code, _, err = run_cli(
        capsys,
        "inspect",
        "--model",
        tiny_bundle,
        "--tested",
        tmp_path / "t.png",
        "--template",
        tmp_path / "r.png",
        "--out",
        tmp_path / "o",
    )
    assert code == 2 and "same size" in err
    assert not (tmp_path / "o").exists()
    code, _, err = run_cli(
        capsys,
        "inspect",
        "--model",
        tiny_bundle,
        "--tested",
        tmp_path / "t.png",
        "--board",
        "x",
        "--out",
        tmp_path / "o",
    )
    assert code == 2 and "unknown board 'x'" in err
    code, _, err = run_cli(
        capsys,
        "inspect",
        "--model",
        tiny_bundle,
        "--tested",
        tmp_path / "t.png",
        "--board",
        "demo",
        "--out",
        tmp_path / "o",
    )
    assert code == 0


def test_empty_split_is_a_clear_error(
    synth_root: Path, tmp_path: Path, tiny_bundle: Path, capsys: pytest.CaptureFixture
) -> None:
    (synth_root / "PCBData" / "empty.txt").write_text("\n")
    code, _, err = run_cli(capsys, "evaluate", "--model", tiny_bundle, "--data", synth_root, "--split", "empty.txt")
    assert code == 2 and "lists no items" in err


def test_baseline_command_and_scorer(synth_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code, out, _ = run_cli(capsys, "baseline", "--data", synth_root, "--patch", "64", "--json", tmp_path / "b.json")
    assert code == 0 and "classical" in out
    rep = json.loads((tmp_path / "b.json").read_text())
    assert rep["auroc"] > 0.7  # defect pixels separate synthetic defects well
    data = load_subset(synth_root, "trainval.txt", "all", None, PatchSpec(patch=64))
    scores = classical_scorer()(data.store, data.index)
    assert scores.shape == (len(data.index),) and np.all(scores >= 0)
    assert scores[data.index.labels == 1].mean() > scores[data.index.labels == 0].mean()
