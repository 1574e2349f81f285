from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pcbsiam.data.synth import generate_pair
from pcbsiam.deploy.bundle import load_bundle
from pcbsiam.deploy.inspector import Inspection, Inspector, TileResult, board_tiles
from pcbsiam.errors import PcbsiamError, RegistrationError
from pcbsiam.viz.overlay import render_overlay
from tests.conftest import board, make_tiny_bundle


def pixel_embedding(x: torch.Tensor) -> torch.Tensor:
    """A stand-in network: the normalised pixels themselves, so distance grows with pixel change."""
    return F.normalize(x.flatten(1), dim=1)


def test_tile_grid_covers_the_image_flush() -> None:
    tiles = board_tiles(300, 200, 128)
    assert {tuple(t[:2]) for t in tiles} == {(0, 0), (0, 72), (128, 0), (128, 72), (172, 0), (172, 72)}
    assert len(board_tiles(256, 256, 128, overlap=0.5)) == 9
    with pytest.raises(PcbsiamError, match="smaller than one"):
        board_tiles(100, 300, 128)


def test_flagged_tiles_cover_the_injected_defects(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pair = generate_pair(np.random.default_rng(5), size=384)
    bundle = load_bundle(make_tiny_bundle(tmp_path / "b.bundle", patch=64, input_size=64))
    monkeypatch.setattr(bundle.model, "embed", pixel_embedding)
    inspector = Inspector(bundle, overlap=0.0)
    clean = inspector.inspect(pair.tested_clean if pair.tested_clean is not None else pair.tested, pair.template)
    assert (clean.shift["dy"], clean.shift["dx"]) == pair.shift
    clean_free = [t.score for t in clean.tiles if not _hits(t, pair.boxes)]
    bundle.model.threshold.fill_(max(clean_free) + 1e-6)  # every defect-free tile passes
    result = inspector.inspect(pair.tested_clean, pair.template)
    for x1, y1, x2, y2, _ in pair.boxes.tolist():
        assert any(t.defective and _overlap(t, (x1, y1, x2, y2)) for t in result.tiles), (x1, y1, x2, y2)
    assert result.defective
    png = render_overlay(pair.tested, result)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


def _overlap(t, box) -> bool:  # noqa: ANN001
    x1, y1, x2, y2 = box
    return t.x < x2 and x1 < t.x + t.w and t.y < y2 and y1 < t.y + t.h


def _hits(t, boxes) -> bool:  # noqa: ANN001
    return any(_overlap(t, b[:4]) for b in boxes.tolist())


def test_bad_pairs_are_refused_with_sentences(tiny_bundle: Path) -> None:
    inspector = Inspector(load_bundle(tiny_bundle))
    with pytest.raises(RegistrationError, match="same size"):
        inspector.inspect(board(1, 192), board(1, 160))
    with pytest.raises(PcbsiamError, match="unknown board 'nope'.*demo"):
        inspector.inspect(board(1, 192), "nope")
    far = np.roll(board(1, 192), 40, axis=1)
    with pytest.raises(RegistrationError):
        Inspector(load_bundle(tiny_bundle), max_shift=8).inspect(far, board(1, 192))


def test_registered_board_embeddings_are_computed_once(tiny_bundle: Path) -> None:
    inspector = Inspector(load_bundle(tiny_bundle))
    calls = []
    real = inspector.model.encode
    inspector.model.encode = lambda x: calls.append(len(x)) or real(x)  # type: ignore[method-assign]
    for _ in range(3):
        inspector.inspect(board(1, 192), "demo")
    assert calls == [9] * 4  # one batch of the reference's 9 tiles, then one of each tested image's


def test_uncalibrated_model_is_refused(tmp_path: Path) -> None:
    bundle = load_bundle(make_tiny_bundle(tmp_path / "u.bundle", threshold=float("nan")))
    with pytest.raises(PcbsiamError, match="calibrate"):
        Inspector(bundle)


@pytest.mark.parametrize("mode", ["diff", "stack"])
def test_reference_aware_bundles_inspect_and_cache(tmp_path: Path, mode: str) -> None:
    from pcbsiam.config import load_config
    from pcbsiam.deploy.bundle import Bundle
    from pcbsiam.models import create_model

    cfg = load_config("tiny", [f"model.mode={mode}", "model.hidden_dim=16", "model.input_size=32", "data.patch=64"])
    model = create_model(cfg.model).eval()
    model.threshold.fill_(0.0)
    path = Bundle(model, cfg, ["g"], boards={"demo": board(1, 192)}).save(tmp_path / f"{mode}.bundle")
    inspector = Inspector(load_bundle(path))
    first = inspector.inspect(board(1, 192), "demo")
    again = inspector.inspect(board(1, 192), "demo")  # the cached reference encoding gives the same scores
    assert len(first.tiles) == 9
    assert [t.score for t in first.tiles] == pytest.approx([t.score for t in again.tiles], abs=1e-5)


def test_context_tiles_show_the_surroundings(tmp_path: Path) -> None:
    from pcbsiam.config import load_config

    bundle = load_bundle(make_tiny_bundle(tmp_path / "b.bundle", patch=64, input_size=80))
    bundle.cfg = load_config("tiny", ["data.patch=64", "data.context=8", "model.input_size=80"])
    seen: list[torch.Size] = []
    embed = bundle.model.embed
    bundle.model.embed = lambda x: seen.append(x.shape) or embed(x)  # noqa: E731
    img = board(3, 128)
    result = Inspector(bundle).inspect(img, img, register=False)
    assert len(result.tiles) == 4 and {(t.h, t.w) for t in result.tiles} == {(64, 64)}  # verdicts per tile
    assert seen and all(s[-2:] == (80, 80) for s in seen)  # the network sees 64 + 2 x 8 px
    from pcbsiam.data.transforms import context_box, crop

    assert crop(img, *context_box(0, 0, 64, 64, Inspector(bundle).spec.context), fill=None).shape == (80, 80)


def test_tile_crops_agree_on_a_shifted_defect_free_board(tmp_path: Path) -> None:
    from pcbsiam.config import load_config
    from pcbsiam.data.registration import Shift

    bundle = load_bundle(make_tiny_bundle(tmp_path / "b.bundle", patch=64, input_size=80))
    bundle.cfg = load_config("tiny", ["data.patch=64", "data.context=8", "model.input_size=80"])
    big = board(4, 224)
    tested, reference = big[5:197, 2:194], big[2:194, 4:196]  # tested[y, x] = reference[y + 3, x - 2]
    inspector = Inspector(bundle)
    tiles = board_tiles(192, 192, 64)
    boxes, t, r = inspector.crop_tiles(tested, reference, tiles, Shift(-3, 2, 1.0))
    assert len(boxes) == 9 and boxes[0] == (-8 + 3, -8 - 2, 80, 80)
    # with context and a shift, border tiles leave one image or the other: the crops still agree
    assert all(np.array_equal(a, b) for a, b in zip(t, r, strict=True))
    # the same with a per-tile refinement, from a global shift that is off by (1, -1)
    bundle.cfg = load_config(
        "tiny", ["data.patch=64", "data.context=8", "model.input_size=80", "data.register=true", "data.local_shift=2"]
    )
    boxes, t, r = Inspector(bundle).crop_tiles(tested, reference, tiles, Shift(-2, 1, 1.0))
    assert boxes[4] == (64 - 8 + 3, 64 - 8 - 2, 80, 80)
    assert np.array_equal(t[4], r[4])


def test_a_16_bit_copy_of_a_deeppcb_board_gets_the_same_verdicts(shared_deeppcb: Path, tmp_path: Path) -> None:
    from PIL import Image

    from pcbsiam.data.images import load_gray

    base = shared_deeppcb / "PCBData" / "group20085" / "20085"
    tested8, template8 = load_gray(base / "20085000_test.jpg"), load_gray(base / "20085000_temp.jpg")
    for name, arr in (("t16.png", tested8), ("r16.tif", template8)):
        Image.fromarray(arr.astype(np.uint16) * 257).save(tmp_path / name)
    tested16, template16 = load_gray(tmp_path / "t16.png"), load_gray(tmp_path / "r16.tif")
    np.testing.assert_array_equal(tested16, tested8)
    bundle = load_bundle(make_tiny_bundle(tmp_path / "b.bundle", patch=128, threshold=0.05))
    inspector = Inspector(bundle)
    eight, sixteen = inspector.inspect(tested8, template8), inspector.inspect(tested16, template16)
    assert [t.defective for t in sixteen.tiles] == [t.defective for t in eight.tiles]
    assert [t.score for t in sixteen.tiles] == pytest.approx([t.score for t in eight.tiles], abs=1e-6)


@pytest.mark.parametrize("mode", ["paper", "stack"])
def test_gate_skips_the_network_on_tiles_without_a_difference(tmp_path: Path, mode: str) -> None:
    pair = generate_pair(np.random.default_rng(5), size=256)
    overrides = [f"model.mode={mode}", "model.gate=0"]
    bundle = load_bundle(make_tiny_bundle(tmp_path / "g.bundle", patch=64, input_size=64, overrides=overrides))
    gated, plain = (
        Inspector(bundle),
        Inspector(
            load_bundle(make_tiny_bundle(tmp_path / "p.bundle", patch=64, input_size=64, overrides=overrides[:1]))
        ),
    )
    calls = []
    real = gated.model.encode
    gated.model.encode = lambda x: calls.append(len(x)) or real(x)  # type: ignore[method-assign]
    same = gated.inspect(pair.template, pair.template)
    assert calls == [] and {t.score for t in same.tiles} == {bundle.model.null_score}
    result, reference = gated.inspect(pair.tested, pair.template), plain.inspect(pair.tested, pair.template)
    skipped = [t.score == bundle.model.null_score for t in result.tiles]
    assert any(skipped) and not all(skipped)
    for a, b, s in zip(result.tiles, reference.tiles, skipped, strict=True):
        if not s:
            assert a.score == pytest.approx(b.score, abs=1e-5)
    for x1, y1, x2, y2, _ in pair.boxes.tolist():  # the tile holding each injected defect's centre was scored
        cy, cx = (y1 + y2) / 2, (x1 + x2) / 2
        assert [not s for s, t in zip(skipped, result.tiles, strict=True) if _overlap(t, (cx, cy, cx, cy))] == [True]
    # the gate on the uint8 crops (in prepare, where crops need no resizing) equals the gate on tensors
    prepared = gated.prepare(pair.tested, pair.template)
    assert prepared.keep is not None and prepared.keep.sum() == result.scored_tiles
    on_crops = gated.score_tiles(prepared.tested_crops, prepared.reference_crops, None, prepared.keep)
    on_tensors = gated.score_tiles(prepared.tested_crops, prepared.reference_crops, None)
    assert on_crops[1] == on_tensors[1] and on_crops[0] == pytest.approx(on_tensors[0], abs=1e-6)


def test_a_detector_adds_typed_boxes_and_leaves_the_tiles_alone(tmp_path: Path) -> None:
    import json

    from pcbsiam.detection.classical import ClassicalDetector

    pair = generate_pair(np.random.default_rng(5), size=256)
    bundle = load_bundle(make_tiny_bundle(tmp_path / "b.bundle", patch=64, input_size=64))
    plain = Inspector(bundle).inspect(pair.tested, pair.template)
    # synthetic boards in memory have bright copper (files are written dark, as DeepPCB's)
    found = Inspector(bundle, detector=ClassicalDetector(copper="bright")).inspect(pair.tested, pair.template)
    assert [(t.y, t.x, t.score, t.defective) for t in found.tiles] == [
        (t.y, t.x, t.score, t.defective) for t in plain.tiles
    ]
    assert found.defective == plain.defective and not plain.detections and "detect" not in plain.timings
    assert found.timings["detect"] > 0
    confidences = [d["confidence"] for d in found.detections]
    assert confidences == sorted(confidences, reverse=True)
    for x1, y1, x2, y2, code in pair.boxes.tolist():  # every injected defect is boxed, with its type
        assert any(_iou(d["box"], (x1, y1, x2, y2)) > 0.2 and d["code"] == code for d in found.detections)
    d = found.detections[0]
    assert set(d) == {"box", "type", "code", "confidence"} and d["box"] == [round(v, 1) for v in d["box"]]
    assert found.detection_rows().shape == (len(found.detections), 6)
    assert json.loads(json.dumps(found.to_dict()))["detections"] == found.detections
    png = render_overlay(pair.tested, found, truth=pair.boxes)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert (
        Inspector(bundle, detector=ClassicalDetector(copper="bright")).inspect(pair.template, pair.template).detections
        == []
    )


def _iou(a, b) -> float:  # noqa: ANN001
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(w, 0) * max(h, 0)
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


@pytest.mark.parametrize("pipeline", [True, False])
def test_a_stream_gives_each_board_its_own_inspection_in_order(tiny_bundle: Path, pipeline: bool) -> None:
    """The pipeline (next board prepared in a second thread) changes nothing but the speed: the same
    inspections in the same order, and a board that cannot be inspected yields its error, not the end."""
    inspector = Inspector(load_bundle(tiny_bundle))
    boards = {k: (np.roll(board(k, 192), k, axis=0), board(k, 192)) for k in (1, 2, 3)}
    boards[4] = (board(4, 192), board(4, 160))  # sizes differ: a sentence for this board only

    def load(k: int) -> tuple[np.ndarray, np.ndarray]:
        if k == 5:
            raise PcbsiamError("cannot read board 5")
        return boards[k]

    got = list(inspector.stream([1, 2, 4, 5, 3], load, pipeline=pipeline))
    assert [k for k, _ in got] == [1, 2, 4, 5, 3]
    assert isinstance(got[2][1], RegistrationError) and "same size" in str(got[2][1])
    assert isinstance(got[3][1], PcbsiamError) and "board 5" in str(got[3][1])
    for k, result in [got[0], got[1], got[4]]:
        alone = inspector.inspect(*boards[k])
        assert [t.score for t in result.tiles] == pytest.approx([t.score for t in alone.tiles], abs=1e-6)
        assert result.shift == alone.shift and result.shift["dy"] == k
        assert "decode" in result.timings and result.seconds >= result.timings["network"]


def test_pipeline_plan_pipelines_int8_by_default_and_leaves_the_network_a_thread_fewer() -> None:
    from pcbsiam.cli.common import PIPELINE_CHOICES as cli_choices
    from pcbsiam.deploy.inspector import PIPELINE_CHOICES as choices
    from pcbsiam.deploy.inspector import pipeline_plan

    assert cli_choices == choices
    assert pipeline_plan("auto", "onnx-int8", 2) == (True, 1)
    assert pipeline_plan("auto", "torch", 2) == (False, 2)
    assert pipeline_plan("auto", "onnx-fp32", 4) == (False, 4)
    assert pipeline_plan("on", "torch", 4) == (True, 3)
    assert pipeline_plan("on", "onnx-int8", 1) == (True, 1)
    assert pipeline_plan("off", "onnx-int8", 2) == (False, 2)
    with pytest.raises(PcbsiamError, match="pipeline must be one of"):
        pipeline_plan("sometimes", "torch", 2)


def test_flags_says_which_annotated_boxes_have_their_centre_in_a_flagged_tile() -> None:
    # a 10 x 20 board of two tiles side by side: the right one (x 10..20) flagged
    tiles = [TileResult(0, 0, 10, 10, 0.0, False), TileResult(0, 10, 10, 10, 1.0, True)]
    inspection = Inspection(True, 0.5, {"dy": 0, "dx": 0}, tiles, (10, 20))
    boxes = np.array([[2, 2, 6, 6, 1], [12, 2, 16, 6, 3], [8, 0, 10, 4, 2], [2, 12, 6, 16, 4]])
    # centres (x, y): (4, 4) left tile, (14, 4) right tile, (9, 2) left tile, (4, 14) below the board
    assert inspection.flags(boxes).tolist() == [False, True, False, False]
    assert inspection.flags(np.zeros((0, 5), np.int64)).tolist() == []


class _FixedDetector:
    """A detector that reports the same boxes on every pair."""

    def __init__(self, rows: list[tuple[float, float, float, float, float, int]]) -> None:
        self.rows = np.asarray(rows, dtype=np.float64).reshape(-1, 6)

    def detect(self, tested: np.ndarray, template: np.ndarray):  # noqa: ANN201
        from pcbsiam.data.registration import Shift
        from pcbsiam.detection.records import Detections

        r = self.rows
        return Detections(r[:, :4], r[:, 4], r[:, 5].astype(np.int64), Shift(0, 0, 1.0))


def test_confident_detections_flag_the_tiles_holding_half_their_box(tmp_path: Path) -> None:
    pair = generate_pair(np.random.default_rng(5), size=256)
    bundle = load_bundle(make_tiny_bundle(tmp_path / "b.bundle", patch=64, input_size=64))
    with torch.no_grad():
        bundle.model.threshold.fill_(1e9)  # no tile is defective by its score
    detector = _FixedDetector(
        [
            (10, 10, 30, 30, 0.995, 3),  # inside the tile at (0, 0)
            (100, 54, 120, 74, 0.995, 1),  # half in the tile at (0, 64), half in (64, 64): both
            (200, 200, 220, 220, 0.6, 2),  # below the cut: flags nothing
        ]
    )
    plain = Inspector(bundle, detector=detector).inspect(pair.tested, pair.template)
    assert not plain.defective and not any(t.detected for t in plain.tiles) and len(plain.detections) == 3
    flagged = Inspector(bundle, detector=detector, flag_detections=0.99).inspect(pair.tested, pair.template)
    marked = sorted((t.y, t.x) for t in flagged.tiles if t.defective)
    assert marked == [(0, 0), (0, 64), (64, 64)] and flagged.defective
    assert all(t.detected == t.defective for t in flagged.tiles)
    assert flagged.to_dict()["defective_tiles"] == 3
    low = Inspector(bundle, detector=detector, flag_detections=0.5).inspect(pair.tested, pair.template)
    assert (192, 192) in [(t.y, t.x) for t in low.tiles if t.detected]
    with pytest.raises(PcbsiamError, match="needs a detector"):
        Inspector(bundle, flag_detections=0.99)
    with pytest.raises(PcbsiamError, match=r"\[0, 1\]"):
        Inspector(bundle, detector=detector, flag_detections=1.5)
