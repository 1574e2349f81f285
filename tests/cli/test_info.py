"""Bundles know their training data: the data's description, ``pcbsiam info``, and what evaluate does on
other data."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from pcbsiam.cli.main import main
from pcbsiam.data.sources import describe_data, same_data
from pcbsiam.deploy.bundle import load_bundle


def test_the_fingerprint_follows_the_files_not_the_names(synth_root: Path, tiny_deeppcb: Path, tmp_path: Path) -> None:
    synth = describe_data(synth_root)
    assert synth["synthetic"] and synth["layout"] == "deeppcb" and synth["items"] == 24
    copy = tmp_path / "copy"
    shutil.copytree(synth_root, copy)
    assert describe_data(copy)["fingerprint"] == synth["fingerprint"]  # the same files elsewhere
    first = sorted((copy / "PCBData").glob("group*/*/*_test.jpg"))[0]
    first.write_bytes(first.read_bytes() + b"\0")  # one file of another size: other data
    assert describe_data(copy)["fingerprint"] != synth["fingerprint"]
    real = describe_data(tiny_deeppcb)
    assert not real["synthetic"] and real["fingerprint"] != synth["fingerprint"]
    assert same_data(synth, synth_root) is True and same_data(synth, tiny_deeppcb) is False
    assert same_data({}, synth_root) is None


def test_a_bundle_carries_its_training_data_and_info_prints_it(
    tiny_run: Path, synth_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    assert load_bundle(tiny_run).data["fingerprint"] == describe_data(synth_root)["fingerprint"]
    bundle = tmp_path / "m.bundle"
    assert main(["calibrate", "--model", str(tiny_run), "--data", str(synth_root), "--bundle", str(bundle)]) == 0
    half = tmp_path / "half" / "model.bundle"
    argv = ["calibrate", "--model", str(tiny_run), "--data", str(synth_root), "--out", str(half.parent), "--half"]
    assert main(argv) == 0
    capsys.readouterr()
    assert load_bundle(bundle).data == load_bundle(tiny_run).data  # calibration keeps the record
    assert half.stat().st_size < 0.6 * bundle.stat().st_size
    assert main(["info", str(bundle), "--json"]) == 0
    card = json.loads(capsys.readouterr().out)
    assert card["training_data"]["synthetic"] is True and card["network"]["mode"] == load_bundle(bundle).cfg.model.mode
    assert card["threshold"] == pytest.approx(load_bundle(bundle).threshold)
    assert main(["info", str(bundle)]) == 0
    text = capsys.readouterr().out
    assert "fingerprint" in text and "trained on synthetic boards" in text


def test_evaluate_on_other_data_scores_every_item_and_says_why(
    tiny_run: Path, synth_root: Path, tiny_deeppcb: Path, tmp_path: Path
) -> None:
    from pcbsiam.evaluation.evaluate import evaluate_models

    own, _ = evaluate_models([tiny_run], synth_root)
    assert own["models"]["tiny"]["subset"] == "val" and "notes" not in own["models"]["tiny"]
    other, _ = evaluate_models([tiny_run], tiny_deeppcb)
    rep = other["models"]["tiny"]
    assert rep["subset"] == "all" and rep["n"] == 8  # the 8 boards of the other data, not the run's val names
    notes = " ".join(rep["notes"])
    assert "not exactly the data this model was trained on" in notes and "synthetic boards" in notes


def test_a_batch_of_only_defective_boards_says_what_board_accuracy_means(
    synth_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from tests.conftest import make_tiny_bundle

    bundle = make_tiny_bundle(tmp_path / "b.bundle", patch=64)
    args = ["inspect", "--model", str(bundle), "--batch", "--data", str(synth_root), "--out", str(tmp_path / "o")]
    assert main(args) == 0
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert "defects_flagged_share" in summary and "every annotated board here has defects" in summary["note"]
    assert "note" in json.loads(capsys.readouterr().out)
