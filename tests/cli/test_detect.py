"""``pcbsiam detect`` and ``pcbsiam evaluate-detections`` on the synthetic boards, the detector factory and the
detection overlay."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pcbsiam.cli.main import main
from pcbsiam.data.sampler import split_by_image
from pcbsiam.data.sources import read_boards
from pcbsiam.detection.factory import DETECTORS, make_detector
from pcbsiam.detection.learned import WindowSpec
from pcbsiam.errors import ConfigError
from pcbsiam.viz.overlay import render_detections
from tests.conftest import board, run_cli

FIGURES = ("precision", "recall", "f_score", "ap", "n_images", "n_gt", "n_det", "n_correct", "confusion", "per_type")


@pytest.fixture(scope="module")
def batch(synth_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The output folder of ``detect --batch`` over every synthetic board."""
    out = tmp_path_factory.mktemp("detect") / "all"
    assert main(["detect", "--batch", "--data", str(synth_root), "--out", str(out)]) == 0
    return out


def test_batch_writes_one_result_file_per_item_and_the_protocol_figures(synth_root: Path, batch: Path) -> None:
    names = {p.name for p in read_boards(synth_root).pairs}
    assert {f.stem for f in (batch / "results").glob("*.txt")} == names
    rep = json.loads((batch / "detection.json").read_text())
    assert all(k in rep for k in FIGURES)
    assert rep["n_images"] == rep["boards"] == len(names) and rep["skipped"] == []
    assert rep["method"] == "classical" and rep["subset"] == "all" and rep["boards_per_s"] > 0
    assert 0.3 < rep["f_score"] <= 1 and rep["n_correct"] > 0  # the dark-copper synthetic files are detectable
    assert "| P % | R % | F % | AP % |" in (batch / "detection.md").read_text()


def test_evaluate_detections_on_the_batch_folder_gives_the_same_figures(
    synth_root: Path, batch: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    capsys.readouterr()
    code, out, _ = run_cli(
        capsys,
        "evaluate-detections",
        "--results",
        batch / "results",
        "--data",
        synth_root,
        "--json",
        tmp_path / "e.json",
    )
    assert code == 0 and "| P % | R % | F % | AP % |" in out
    again, first = json.loads((tmp_path / "e.json").read_text()), json.loads((batch / "detection.json").read_text())
    assert {k: again[k] for k in FIGURES} == {k: first[k] for k in FIGURES}
    assert again["n_ignored_files"] == 0


def test_subsets_follow_the_training_split_and_the_holdout_groups(
    synth_root: Path, batch: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    pairs = read_boards(synth_root).pairs
    _, val_idx = split_by_image(pairs, 0.1, 0)
    code, out, _ = run_cli(
        capsys, "detect", "--batch", "--data", synth_root, "--subset", "val", "--out", tmp_path / "v"
    )
    assert code == 0 and json.loads(out)["boards"] == len(val_idx)
    assert {f.stem for f in (tmp_path / "v" / "results").glob("*.txt")} == {pairs[i].name for i in val_idx}
    assert json.loads((tmp_path / "v" / "detection.json").read_text())["subset"] == "val"

    group = pairs[0].group
    code, out, _ = run_cli(
        capsys, "evaluate-detections", "--results", batch / "results", "--data", synth_root, "--holdout-groups", group
    )
    assert code == 0 and out.startswith(f"{sum(p.group == group for p in pairs)} images,")
    code, out, _ = run_cli(
        capsys,
        "evaluate-detections",
        "--results",
        batch / "results",
        "--data",
        synth_root,
        "--holdout-groups",
        group.removeprefix("group"),
        "--subset",
        "train",
    )
    assert code == 0 and out.startswith(f"{sum(p.group != group for p in pairs)} images,")


def test_single_pair_writes_a_report_and_an_overlay(
    synth_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    pair = read_boards(synth_root).pairs[0]
    out = tmp_path / "one"
    code, printed, _ = run_cli(capsys, "detect", "--tested", pair.tested, "--template", pair.template, "--out", out)
    assert code == 0
    summary, rep = json.loads(printed), json.loads((out / "report.json").read_text())
    assert summary["detections"] == len(rep["detections"]) > 0
    assert set(rep) >= {"shift", "seconds", "detections"} and set(rep["shift"]) == {"dy", "dx", "score"}
    first = rep["detections"][0]
    assert set(first) == {"box", "type", "code", "confidence"} and len(first["box"]) == 4
    assert 1 <= first["code"] <= 6 and 0 <= first["confidence"] <= 1
    assert [d["confidence"] for d in rep["detections"]] == sorted(
        (d["confidence"] for d in rep["detections"]), reverse=True
    )
    with Image.open(out / "overlay.png") as im:
        assert im.format == "PNG" and min(im.size) >= 256


def test_pairs_folder_skips_a_bad_pair_and_refuses_when_none_is_left(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    folder = tmp_path / "pairs"
    folder.mkdir()
    Image.fromarray(255 - board(1)).save(folder / "good_test.png")
    Image.fromarray(255 - board(1)).save(folder / "good_temp.png")
    Image.fromarray(board(2, 96)).save(folder / "bad_test.png")
    Image.fromarray(board(2, 64)).save(folder / "bad_temp.png")  # another size: cannot be compared
    code, out, err = run_cli(capsys, "detect", "--batch", "--pairs", folder, "--out", tmp_path / "o")
    assert code == 0 and "skipped: bad:" in err and "same size" in err
    summary = json.loads(out)
    assert summary["boards"] == 1 and summary["skipped"] == 1 and summary["detections"] == 0
    assert [f.name for f in (tmp_path / "o" / "results").iterdir()] == ["good.txt"]
    assert (tmp_path / "o" / "results" / "good.txt").read_text() == ""  # no detection: an empty file
    assert not (tmp_path / "o" / "detection.json").exists()  # no annotations, no score

    (folder / "good_test.png").unlink()
    (folder / "good_temp.png").unlink()
    code, _, err = run_cli(capsys, "detect", "--batch", "--pairs", folder, "--out", tmp_path / "o2")
    assert code == 2 and "has no readable item (1 skipped" in err.splitlines()[-1]
    assert not (tmp_path / "o2").exists()


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        ("detect --method learned --tested {img} --template {img} --out {tmp}/o", "needs a trained model"),
        ("detect --method bogus --tested {img} --template {img} --out {tmp}/o", "invalid choice: 'bogus'"),
        ("detect --tested {img} --out {tmp}/o", "give --tested IMG and --template IMG"),
        ("detect --tested {img} --template {img} --views 4 --out {tmp}/o", "the classical one takes none"),
        ("detect --tested {img} --template {img} --views 3 --out {tmp}/o", "invalid choice: 3"),
        ("detect --tested {img} --template {img} --fine-band 1 --out {tmp}/o", "the classical detector takes none"),
        ("detect --tested {img} --template {img} --fine-band 2 --out {tmp}/o", "--fine-band"),
        ("detect --batch --data {data} --subset test --out {tmp}/o", "invalid choice: 'test'"),
        ("detect --batch --data {data} --holdout-groups nope --out {tmp}/o", "unknown group(s) nope"),
        ("detect --batch --pairs {tmp} --subset val --out {tmp}/o", "a --pairs folder has no split"),
        ("evaluate-detections --results {tmp}/none --data {data}", "results folder not found"),
        ("evaluate-detections --results {tmp} --data {data} --holdout-groups ,", "needs PCB group names"),
    ],
)
def test_bad_input_is_one_sentence(
    synth_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture, argv: str, says: str
) -> None:
    img = next((synth_root / "PCBData").rglob("*_test.jpg"))
    args = argv.format(img=img, tmp=tmp_path, data=synth_root).split()
    code, _, err = run_cli(capsys, *args)
    assert code == 2 and len(err.splitlines()) == 1 and err.startswith("pcbsiam: error: "), err
    assert says in err
    assert not (tmp_path / "o").exists()


def test_factory_knows_its_methods() -> None:
    assert DETECTORS == ("classical", "learned")
    assert make_detector("classical").detect(board(3), board(3)).as_array().shape[1] == 6
    with pytest.raises(ConfigError, match="classical, learned"):
        make_detector("nearest")
    with pytest.raises(ConfigError, match="--model"):
        make_detector("learned")


def test_learned_detect_averages_repeated_models(
    synth_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    import torch

    from pcbsiam.detection.learned import save_detector
    from pcbsiam.models.detector import CandidateNet, VerifierConfig

    torch.manual_seed(0)
    for name in ("a", "b"):
        save_detector(
            tmp_path / name / "detector.pt",
            CandidateNet(VerifierConfig(input_size=32, hidden_dim=16)),
            WindowSpec(),
            {},
        )
    pair = read_boards(synth_root).pairs[0]
    common = ["detect", "--method", "learned", "--tested", pair.tested, "--template", pair.template]
    code, _, _ = run_cli(
        capsys, *common, "--model", tmp_path / "a", "--model", tmp_path / "b", "--out", tmp_path / "ab"
    )
    assert code == 0 and (tmp_path / "ab" / "report.json").exists()
    assert len(make_detector("learned", [str(tmp_path / "a"), str(tmp_path / "b")]).nets) == 2
    assert make_detector("learned", str(tmp_path / "a"), fine_band=1).proposer.fine_k == 1
    code, _, _ = run_cli(capsys, *common, "--model", tmp_path / "a", "--fine-band", "1", "--out", tmp_path / "f")
    assert code == 0 and (tmp_path / "f" / "report.json").exists()
    save_detector(
        tmp_path / "c" / "detector.pt",
        CandidateNet(VerifierConfig(input_size=32, hidden_dim=16)),
        WindowSpec(min_side=48),
        {},
    )
    code, _, err = run_cli(
        capsys, *common, "--model", tmp_path / "a", "--model", tmp_path / "c", "--out", tmp_path / "ac"
    )
    assert code == 2 and "same candidates" in err and not (tmp_path / "ac").exists()


def test_render_detections_returns_and_writes_the_png(tmp_path: Path) -> None:
    dets = np.array([[10, 10, 30, 40, 0.9, 1], [50, 2, 60, 12, 0.4, 6]], dtype=np.float64)
    truth = np.array([[12, 12, 30, 38, 1]])
    png = render_detections(board(4), dets, tmp_path / "d.png", truth=truth)
    assert (tmp_path / "d.png").read_bytes() == png
    assert not list(tmp_path.glob(".d.png.*"))  # written atomically: no temporary left
    with Image.open(io.BytesIO(png)) as im:
        assert im.format == "PNG" and im.size == (640, 640)  # the board alone, scaled up, no margins
    assert render_detections(board(4), np.zeros((0, 6))).startswith(b"\x89PNG")


def test_the_verifier_reads_the_rule_types_unless_told_not_to(tmp_path: Path) -> None:
    from pcbsiam.cli.main import build_parser

    base = ["train-detector", "--data", str(tmp_path), "--out", str(tmp_path / "d")]
    assert build_parser().parse_args(base).rule_types is True
    assert build_parser().parse_args([*base, "--no-rule-types"]).rule_types is False
    assert build_parser().parse_args(["detect", "--views", "4", "--out", str(tmp_path / "o")]).views == 4


def test_the_fine_band_adds_its_candidates_to_the_saved_window_spec(tmp_path: Path) -> None:
    from pcbsiam.cli.detect import window_spec
    from pcbsiam.cli.main import build_parser

    base = ["train-detector", "--data", str(tmp_path), "--out", str(tmp_path / "d")]
    assert build_parser().parse_args(base).fine_band == 0
    assert build_parser().parse_args([*base, "--fine-band", "1"]).fine_band == 1
    assert window_spec(0) == WindowSpec() and window_spec(0).proposer().fine_k == 0
    spec = window_spec(1)
    assert spec.proposer().fine_k == 1 and spec.proposer().vanished_tracks  # the other candidates stay
    assert WindowSpec.from_dict(spec.to_dict()).proposer().fine_k == 1  # as saved with the weights
    assert not spec.proposer().fine_extra and not build_parser().parse_args(base).fine_extra
    extra = window_spec(1, fine_extra=True)
    assert build_parser().parse_args([*base, "--fine-band", "1", "--fine-extra"]).fine_extra
    assert WindowSpec.from_dict(extra.to_dict()).proposer().fine_extra and extra.proposer().fine_k == 1
    with pytest.raises(ConfigError, match="--fine-band 1"):
        window_spec(0, fine_extra=True)


def test_train_detector_hands_the_window_and_input_settings_to_training(
    synth_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pcbsiam.train.detector as training
    from pcbsiam.models.detector import VerifierConfig

    seen = {}

    def fake(pairs, out, net_cfg, spec, cfg, *rest):  # noqa: ANN001, ANN202
        seen.update(net_cfg=net_cfg, spec=spec, boards=len(pairs))
        return None, {"train_boards": 1, "windows": 1, "defect_windows": 1, "sample_seconds": 0, "train_seconds": 0}

    monkeypatch.setattr(training, "train_detector", fake)
    common = ("train-detector", "--data", synth_root, "--out", tmp_path / "d")
    assert run_cli(capsys, *common)[0] == 0
    assert seen["net_cfg"] == VerifierConfig(rule_types=True) and seen["spec"] == WindowSpec() and seen["boards"] > 0
    extra = ("--input-size", "48", "--window-grow", "2", "--fine-band", "1", "--fine-extra")
    assert run_cli(capsys, *common, *extra)[0] == 0
    assert seen["net_cfg"].input_size == 48 and seen["spec"].grow == 2.0
    assert seen["spec"].proposer().fine_extra and seen["spec"].proposer().fine_k == 1
    code, _, err = run_cli(capsys, *common, "--fine-extra")
    assert code != 0 and "--fine-band 1" in err
    assert run_cli(capsys, *common, "--window-grow", "0.5")[0] == 2  # argparse refuses it


def test_export_detector_writes_graphs_that_detect_runs(
    synth_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    import torch

    from pcbsiam.detection.learned import save_detector
    from pcbsiam.models.detector import CandidateNet, VerifierConfig

    torch.manual_seed(0)
    for name in ("a", "b"):
        net = CandidateNet(VerifierConfig(input_size=32, hidden_dim=16, rule_types=True))
        save_detector(tmp_path / name / "detector.pt", net, WindowSpec(), {})
    code, out, _ = run_cli(
        capsys, "export-detector", "--model", tmp_path / "a", "--onnx", tmp_path / "a.onnx", "--int8",
        "--data", synth_root, "--calib-boards", "3",
    )  # fmt: skip
    report = json.loads(out)
    assert code == 0 and Path(report["int8"]["onnx"]) == tmp_path / "a-int8.onnx"
    assert report["int8"]["calibration_boards"] == 3 and report["int8"]["calibration_windows"] > 0
    assert 0.0 <= report["int8"]["agreement"]["same_class"] <= 1.0
    pair = read_boards(synth_root).pairs[0]
    common = ["detect", "--method", "learned", "--tested", pair.tested, "--template", pair.template]
    reports = {}
    for engine in ("torch", tmp_path / "a.onnx", tmp_path / "a-int8.onnx"):
        out_dir = tmp_path / f"out-{Path(engine).stem}"
        code, _, _ = run_cli(capsys, *common, "--model", tmp_path / "a", "--engine", engine, "--out", out_dir)
        reports[Path(engine).stem] = json.loads((out_dir / "report.json").read_text())
        assert code == 0 and reports[Path(engine).stem]["engine"] == str(engine)
    assert [d["type"] for d in reports["a"]["detections"]] == [d["type"] for d in reports["torch"]["detections"]]
    code, _, err = run_cli(
        capsys, *common, "--model", tmp_path / "b", "--engine", tmp_path / "a.onnx", "--out", tmp_path / "x"
    )
    assert code != 0 and "another verifier" in err
    code, _, err = run_cli(
        capsys, "detect", "--tested", pair.tested, "--template", pair.template, "--engine", tmp_path / "a.onnx",
        "--out", tmp_path / "y",
    )  # fmt: skip
    assert code == 2 and "classical detector has none" in err
    code, _, err = run_cli(
        capsys, "export-detector", "--model", tmp_path / "a", "--onnx", tmp_path / "c.onnx", "--int8"
    )
    assert code == 2 and "--int8 needs --data" in err


def test_views_below_needs_views_and_a_learned_detector(
    synth_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    import torch

    from pcbsiam.detection.learned import save_detector
    from pcbsiam.models.detector import CandidateNet, VerifierConfig

    torch.manual_seed(0)
    save_detector(tmp_path / "d.pt", CandidateNet(VerifierConfig(input_size=32, hidden_dim=16)), WindowSpec(), {})
    pair = read_boards(synth_root).pairs[0]
    common = ["detect", "--tested", pair.tested, "--template", pair.template, "--views-below", "0.9"]
    learned = [*common, "--method", "learned", "--model", tmp_path / "d.pt"]
    code, _, err = run_cli(capsys, *learned, "--out", tmp_path / "a")
    assert code == 2 and "give --views 2, 4 or 8" in err
    code, _, err = run_cli(capsys, *common, "--views", "4", "--out", tmp_path / "b")
    assert code == 2 and "classical one takes none" in err
    code, _, err = run_cli(capsys, *learned, "--views", "4", "--views-below", "0", "--out", tmp_path / "c")
    assert code == 2 and "(0.0, 1.0]" in err
    code, _, err = run_cli(capsys, *learned, "--views", "4", "--out", tmp_path / "d")
    assert code == 0, err
    assert make_detector("learned", str(tmp_path / "d.pt"), views=4, views_below=0.9).views_below == 0.9
