"""``pcbsiam inspect --detector``: typed boxes in the single-pair report and, in batch, DeepPCB result files
scored by the protocol."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from tests.conftest import run_cli


def _pair(root: Path) -> tuple[Path, Path, Path]:
    """A defective synthetic item: (tested, template, annotation)."""
    for ann in sorted((root / "PCBData").glob("group*/*_not/*.txt")):
        if ann.read_text().strip():
            folder = ann.parent.parent / ann.parent.name.removesuffix("_not")
            return folder / f"{ann.stem}_test.jpg", folder / f"{ann.stem}_temp.jpg", ann
    raise AssertionError(f"no annotated defect in {root}")


def test_single_pair_reports_and_draws_the_detections(
    tiny_bundle: Path, synth_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    tested, template, _ = _pair(synth_root)
    args = ("inspect", "--model", tiny_bundle, "--tested", tested, "--template", template)
    code, out, err = run_cli(capsys, *args, "--out", tmp_path / "plain")
    assert code == 0, err
    code, out, err = run_cli(capsys, *args, "--detector", "classical", "--out", tmp_path / "one")
    assert code == 0, err
    printed = json.loads(out)
    report = json.loads((tmp_path / "one" / "report.json").read_text())
    plain = json.loads((tmp_path / "plain" / "report.json").read_text())
    assert report["tiles"] == plain["tiles"] and plain["detections"] == []
    assert printed["detections"] == len(report["detections"]) >= 1
    assert set(report["detections"][0]) == {"box", "type", "code", "confidence"}
    assert "detect" in report["timings"]
    assert (tmp_path / "one" / "overlay.png").stat().st_size > 1000
    # every detection flags its tiles at cut 0; the cut needs a detector
    code, _, err = run_cli(capsys, *args, "--detector", "classical", "--flag-detections", "0", "--out", tmp_path / "f")
    assert code == 0, err
    flagged = json.loads((tmp_path / "f" / "report.json").read_text())
    assert any(t["detected"] and t["defective"] for t in flagged["tiles"]) and flagged["verdict"] == "defective"
    code, _, err = run_cli(capsys, *args, "--flag-detections", "0.99", "--out", tmp_path / "none")
    assert code != 0 and "needs a detector" in err


def test_batch_writes_result_files_and_the_protocol_figures(
    tiny_bundle: Path, synth_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "batch"
    code, printed, err = run_cli(
        capsys, "inspect", "--model", tiny_bundle, "--batch", "--data", synth_root, "--detector", "classical",
        "--out", out,
    )  # fmt: skip
    assert code == 0, err
    summary = json.loads((out / "summary.json").read_text())
    rows = list(csv.DictReader((out / "verdicts.csv").read_text().splitlines()))
    results = sorted(p.stem for p in (out / "results").glob("*.txt"))
    assert results == sorted(r["name"] for r in rows) and len(rows) == summary["boards"] == 24
    assert summary["detections"] == sum(int(r["detections"]) for r in rows) > 0
    lines = sum(len((out / "results" / f"{n}.txt").read_text().splitlines()) for n in results)
    assert lines == summary["detections"]
    figures = summary["detection"]
    assert figures["n_images"] == 24 and figures["n_det"] == summary["detections"]
    assert figures["recall"] > 0.5 and 0 <= figures["precision"] <= 1 and "per_type" in figures
    assert json.loads(printed)["detection"]["recall"] == pytest.approx(figures["recall"], abs=1e-4)
    assert not (out / "overlay.png").exists()


def test_the_learned_detectors_verifier_runs_from_its_onnx_graph(
    tiny_bundle: Path, synth_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    import torch

    from pcbsiam.deploy.verifier import export_verifier
    from pcbsiam.detection.learned import WindowSpec, save_detector
    from pcbsiam.models.detector import CandidateNet, VerifierConfig

    torch.manual_seed(0)
    net = CandidateNet(VerifierConfig(input_size=32, hidden_dim=16, rule_types=True))
    save_detector(tmp_path / "detector.pt", net, WindowSpec(), {})
    graph = export_verifier(net, tmp_path / "verifier.onnx")
    tested, template, _ = _pair(synth_root)
    args = ("inspect", "--model", tiny_bundle, "--tested", tested, "--template", template)
    args += ("--detector", tmp_path / "detector.pt")
    reports = []
    for engine in ("torch", graph):
        code, _, err = run_cli(capsys, *args, "--detector-engine", engine, "--out", tmp_path / Path(engine).stem)
        assert code == 0, err
        reports.append(json.loads((tmp_path / Path(engine).stem / "report.json").read_text())["detections"])
    assert [d["type"] for d in reports[1]] == [d["type"] for d in reports[0]]
    assert [d["confidence"] for d in reports[1]] == pytest.approx([d["confidence"] for d in reports[0]], abs=1e-3)
    code, _, err = run_cli(capsys, *args[:7], "--detector-engine", graph, "--out", tmp_path / "none")
    assert code == 2 and "give --detector PATH" in err
