from pathlib import Path

import numpy as np
import pytest
import torch

from pcbsiam.data.deeppcb import read_deeppcb
from pcbsiam.data.images import load_gray
from pcbsiam.detection.learned import (
    LearnedDetector,
    WindowSpec,
    aligned_template,
    at_edge,
    boxes_from_windows,
    boxes_in_windows,
    cut_windows,
    drop_pieces,
    load_detector,
    prefer_rules,
    save_detector,
    split_by_rules,
)
from pcbsiam.errors import PcbsiamError
from pcbsiam.models.detector import CandidateNet, VerifierConfig

TINY = VerifierConfig(input_size=32, hidden_dim=16)
BRIGHT = WindowSpec()  # synthetic files have dark copper, as DeepPCB


def test_windows_are_centred_squares_at_least_min_side() -> None:
    spec = WindowSpec(grow=1.5, min_side=64)
    w = spec.windows(np.array([[100, 100, 120, 110], [0, 0, 100, 60]]))
    assert w.tolist() == [[78, 73, 64, 64], [-25, -45, 150, 150]]
    boxes = np.array([[100.0, 100.0, 120.0, 110.0], [0.0, 0.0, 100.0, 60.0]])
    unit = boxes_in_windows(boxes, w)
    assert np.all((unit >= 0) & (unit <= 1))
    np.testing.assert_allclose(boxes_from_windows(unit, w), boxes)


def test_cut_windows_fill_outside_with_the_median() -> None:
    img = np.full((50, 60), 200, np.uint8)
    img[10:20, 10:20] = 0
    (inside, edge) = cut_windows(img, np.array([[5, 5, 20, 20], [-10, 40, 20, 20]]))
    assert inside.shape == (20, 20) and inside[5:15, 5:15].max() == 0 and inside[0, 0] == 200
    assert edge.shape == (20, 20) and np.all(edge == 200)  # outside the image: the board's median


def test_aligned_template_follows_the_shift() -> None:
    from pcbsiam.data.registration import Shift

    t = np.zeros((20, 20), np.uint8)
    t[5, 5] = 255
    tested = np.full((20, 20), 7, np.uint8)
    moved = aligned_template(t, Shift(2, -3, 1.0), tested)
    assert moved[7, 2] == 255 and moved[2:, :17].sum() == 255
    assert np.all(moved[:2] == 7) and np.all(moved[:, 17:] == 7)  # the uncovered strip agrees with the tested image


def test_rotations_and_flips_move_boxes_with_their_windows() -> None:
    from pcbsiam.data.transforms import dihedral_boxes, dihedral_tensor, undo_dihedral_moves

    img = torch.zeros(1, 1, 40, 40)
    img[..., 4:12, 20:36] = 1.0  # rows 4..12, columns 20..36
    box = torch.tensor([[20 / 40, 4 / 40, 36 / 40, 12 / 40]])

    def bbox(x: torch.Tensor) -> list[float]:
        ys, xs = x[0, 0].nonzero(as_tuple=True)
        return [float(v) / 40 for v in (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)]

    move = torch.tensor([[0.05, -0.1, 0.15, 0.2]])
    for k in range(4):
        rotated = torch.rot90(img, k, dims=(-2, -1))
        assert dihedral_boxes(box, k, False)[0].tolist() == pytest.approx(bbox(rotated)), k
        assert dihedral_boxes(box, k, True)[0].tolist() == pytest.approx(bbox(rotated.flip(-1))), k
        for flip in (False, True):
            assert torch.equal(dihedral_tensor(img, k, flip), rotated.flip(-1) if flip else rotated)
            # a move seen in the view, brought back, is the move of the original box
            seen = dihedral_boxes(box + move, k, flip) - dihedral_boxes(box, k, flip)
            assert undo_dihedral_moves(seen, k, flip)[0].tolist() == pytest.approx(move[0].tolist()), (k, flip)


def _pair(synth_root: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    p = next(p for p in read_deeppcb(synth_root).pairs if len(p.boxes))
    return load_gray(p.tested), load_gray(p.template), p.boxes


def _sure_net(code: int) -> CandidateNet:
    """A verifier that calls every window ``code`` with certainty and leaves every box where it is."""
    torch.manual_seed(0)
    net = CandidateNet(TINY)
    with torch.no_grad():
        for layer in (net.classify, net.regress):
            layer.weight.zero_()
            layer.bias.zero_()
        net.classify.bias[code] = 30.0
    return net


def test_a_net_sure_of_one_type_keeps_every_proposal_with_that_type(synth_root: Path) -> None:
    tested, template, _ = _pair(synth_root)
    net = _sure_net(3)  # mousebite
    found = LearnedDetector(net, BRIGHT, nms_iou=1.0, rule_families=()).detect(tested, template)
    proposals = BRIGHT.proposer().detect(tested, template)
    assert len(found) == len(proposals) > 0
    assert set(found.types.tolist()) == {3} and np.all(found.scores > 0.99)
    np.testing.assert_allclose(np.sort(found.boxes, 0), np.sort(proposals.boxes, 0), atol=1e-4)
    with torch.no_grad():
        net.classify.bias[3] = 0.0
        net.classify.bias[0] = 30.0  # "no defect" everywhere: nothing is reported
    assert len(LearnedDetector(net, BRIGHT).detect(tested, template)) == 0


def test_a_verifier_reading_rule_types_gets_each_proposals_own(synth_root: Path) -> None:
    tested, template, _ = _pair(synth_root)
    torch.manual_seed(0)
    net = CandidateNet(VerifierConfig(input_size=32, hidden_dim=16, rule_types=True))
    with torch.no_grad():  # a net that says the type it is given: hint one-hot -> hidden units 0..6 -> logits
        for layer in (net.hidden, net.classify, net.regress):
            layer.weight.zero_()
            layer.bias.zero_()
        net.hidden.weight[:7, -7:] = torch.eye(7)
        net.classify.weight[:, :7] = 30 * torch.eye(7)
    found = LearnedDetector(net, BRIGHT, nms_iou=1.0).detect(tested, template)
    proposals = BRIGHT.proposer().detect(tested, template)
    assert len(found) == len(proposals) > 0 and len(set(proposals.types.tolist())) > 1
    assert sorted(found.types.tolist()) == sorted(proposals.types.tolist())


def test_the_rules_split_extra_copper_only_where_both_call_it_so() -> None:
    # columns: none, open, short, mousebite, spur, spurious copper, pin-hole
    probs = np.array(
        [
            [0.1, 0, 0, 0, 0.5, 0.4, 0],  # network: spur; rules: spurious copper -> spurious copper, 0.9
            [0.1, 0, 0, 0, 0.3, 0.6, 0],  # network: spurious copper; rules: spur -> spur, 0.9
            [0.1, 0, 0.5, 0, 0.4, 0, 0],  # network: short; rules: spur -> the network's short stays
            [0.1, 0, 0, 0, 0.8, 0.1, 0],  # network: spur; rules: open -> the network's spur stays
        ]
    )
    kinds = probs[:, 1:].argmax(1) + 1
    confidence = probs[np.arange(4), kinds]
    types, conf = split_by_rules(probs, kinds, confidence, np.array([5, 4, 4, 1]), (4, 5))
    assert types.tolist() == [5, 4, 2, 4]
    np.testing.assert_allclose(conf, [0.9, 0.9, 0.5, 0.8])


def test_the_detector_lets_the_rules_split_their_families_unless_told_not_to(synth_root: Path) -> None:
    tested, template, _ = _pair(synth_root)
    net = _sure_net(4)  # spur, for every candidate
    proposals = BRIGHT.proposer().detect(tested, template)
    plain = LearnedDetector(net, BRIGHT, nms_iou=1.0, rule_families=()).detect(tested, template)
    split = LearnedDetector(net, BRIGHT, nms_iou=1.0).detect(tested, template)
    assert set(plain.types.tolist()) == {4}
    expected = sorted(t if t in (4, 5) else 4 for t in proposals.types.tolist())
    assert sorted(split.types.tolist()) == expected and 5 in expected  # the rules' isolated copper is named so
    with pytest.raises(ValueError, match="share a type"):
        LearnedDetector(net, BRIGHT, rule_families=((4, 5), (5, 6)))


def test_the_rules_win_one_way_only() -> None:
    # columns: none, open, short, mousebite, spur, spurious copper, pin-hole
    probs = np.array(
        [
            [0.1, 0.6, 0, 0.3, 0, 0, 0],  # network: open; rules: mousebite -> mousebite, 0.9
            [0.1, 0.3, 0, 0.6, 0, 0, 0],  # network: mousebite; rules: open -> the network's mousebite stays
            [0.1, 0.7, 0, 0.2, 0, 0, 0],  # network: open; rules: open -> open
            [0.2, 0.8, 0, 0.0, 0, 0, 0],  # network: open; rules: short -> open
        ]
    )
    kinds = probs[:, 1:].argmax(1) + 1
    confidence = probs[np.arange(4), kinds]
    types, conf = prefer_rules(probs, kinds, confidence, np.array([3, 1, 1, 2]), 1, 3)
    assert types.tolist() == [3, 3, 1, 1]
    np.testing.assert_allclose(conf, [0.9, 0.6, 0.7, 0.8])


def test_the_detector_applies_its_rule_wins(synth_root: Path) -> None:
    tested, template, _ = _pair(synth_root)
    net = _sure_net(4)  # spur, for every candidate
    proposals = BRIGHT.proposer().detect(tested, template)
    rules = set(proposals.types.tolist()) - {4}
    assert rules  # the synthetic board's rules name another type somewhere
    other = min(rules)
    found = LearnedDetector(net, BRIGHT, nms_iou=1.0, rule_families=(), rule_wins=((4, other),)).detect(
        tested, template
    )
    expected = sorted(other if t == other else 4 for t in proposals.types.tolist())
    assert sorted(found.types.tolist()) == expected
    for bad in (((4, 4),), ((0, 3),), ((1, 7),)):
        with pytest.raises(ValueError, match="rule_wins"):
            LearnedDetector(net, BRIGHT, rule_wins=bad)


def test_eight_views_are_blind_to_a_turn_of_the_window() -> None:
    from pcbsiam.data.transforms import apply_dihedral, dihedral_boxes

    rng = np.random.default_rng(0)
    tested = [rng.integers(0, 256, (40, 40), dtype=np.uint8) for _ in range(3)]
    reference = [rng.integers(0, 256, (40, 40), dtype=np.uint8) for _ in range(3)]
    torch.manual_seed(2)
    det = LearnedDetector(CandidateNet(TINY), BRIGHT, views=8)
    probs, moves = det.verify(tested, reference)
    turned = [[apply_dihedral(w, 1, False) for w in ws] for ws in (tested, reference)]
    probs_t, moves_t = det.verify(*turned)
    np.testing.assert_allclose(probs_t, probs, atol=1e-5)
    linear = dihedral_boxes(torch.from_numpy(moves), 1, False) - dihedral_boxes(
        torch.zeros(3, 4, dtype=torch.float64), 1, False
    )
    np.testing.assert_allclose(moves_t, linear.numpy(), atol=1e-5)  # the averaged move turns with the window
    one = LearnedDetector(det.net, BRIGHT).verify(tested, reference)
    assert not np.allclose(one[0], probs, atol=1e-5)  # one view alone is not blind to it (the test can fail)
    with pytest.raises(ValueError, match="1, 2, 4, 8"):
        LearnedDetector(det.net, BRIGHT, views=3)


def test_the_other_views_go_only_to_the_windows_the_first_leaves_unsure() -> None:
    rng = np.random.default_rng(1)
    tested = [rng.integers(0, 256, (40, 40), dtype=np.uint8) for _ in range(8)]
    reference = [rng.integers(0, 256, (40, 40), dtype=np.uint8) for _ in range(8)]
    torch.manual_seed(3)
    net = CandidateNet(TINY)
    every, every_moves = LearnedDetector(net, BRIGHT, views=4).verify(tested, reference)
    first, first_moves = LearnedDetector(net, BRIGHT, views=1).verify(tested, reference)
    cut = float(np.median(first.max(1)))
    unsure = first.max(1) < cut
    assert 0 < unsure.sum() < len(unsure)
    probs, moves = LearnedDetector(net, BRIGHT, views=4, views_below=cut, batch_size=3).verify(tested, reference)
    np.testing.assert_allclose(probs[unsure], every[unsure], atol=1e-6)
    np.testing.assert_allclose(moves[unsure], every_moves[unsure], atol=1e-6)
    np.testing.assert_allclose(probs[~unsure], first[~unsure], atol=1e-6)
    np.testing.assert_allclose(moves[~unsure], first_moves[~unsure], atol=1e-6)
    assert not np.allclose(every, first, atol=1e-4)  # the views differ, so the test can fail
    for bad in (0.0, 1.5):
        with pytest.raises(ValueError, match="views_below must lie"):
            LearnedDetector(net, BRIGHT, views=4, views_below=bad)


def test_save_load_round_trip_and_bad_files(tmp_path: Path, synth_root: Path) -> None:
    tested, template, _ = _pair(synth_root)
    torch.manual_seed(1)
    net = CandidateNet(TINY)
    path = save_detector(tmp_path / "d" / "detector.pt", net, BRIGHT, {"note": "test"})
    a = LearnedDetector(net, BRIGHT).detect(tested, template)
    b = load_detector(tmp_path / "d").detect(tested, template)  # the folder is enough
    np.testing.assert_array_equal(a.as_array(), b.as_array())
    assert load_detector(path).spec == BRIGHT
    with pytest.raises(PcbsiamError):
        load_detector(tmp_path / "nothing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a detector")
    with pytest.raises(PcbsiamError):
        load_detector(tmp_path / "junk.pt")


def test_an_ensemble_averages_its_verifiers_and_refuses_mismatched_ones(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    tested = [rng.integers(0, 256, (40, 40), dtype=np.uint8) for _ in range(3)]
    reference = [rng.integers(0, 256, (40, 40), dtype=np.uint8) for _ in range(3)]
    torch.manual_seed(4)
    a, b = CandidateNet(TINY), CandidateNet(TINY)
    (pa, ma), (pb, mb) = (LearnedDetector(n, BRIGHT, views=2).verify(tested, reference) for n in (a, b))
    both = LearnedDetector([a, b], BRIGHT, views=2)
    assert both.net is a and len(both.nets) == 2
    p, m = both.verify(tested, reference)
    assert not np.allclose(pa, pb, atol=1e-4)  # two different verifiers (the test can fail)
    np.testing.assert_allclose(p, (pa + pb) / 2, atol=1e-6)
    np.testing.assert_allclose(m, (ma + mb) / 2, atol=1e-6)
    with pytest.raises(ValueError, match="at least one verifier"):
        LearnedDetector([], BRIGHT)
    with pytest.raises(ValueError, match="must share input size"):
        LearnedDetector([a, CandidateNet(VerifierConfig(input_size=48, hidden_dim=16))], BRIGHT)

    save_detector(tmp_path / "a" / "detector.pt", a, BRIGHT, {})
    save_detector(tmp_path / "b" / "detector.pt", b, BRIGHT, {})
    loaded = load_detector([tmp_path / "a", str(tmp_path / "b" / "detector.pt")], views=2)
    np.testing.assert_allclose(loaded.verify(tested, reference)[0], p, atol=1e-6)
    save_detector(tmp_path / "c" / "detector.pt", b, WindowSpec(min_side=48), {})
    with pytest.raises(ValueError, match="same candidates"):
        load_detector([tmp_path / "a", tmp_path / "c"])
    with pytest.raises(ValueError, match="no detector file"):
        load_detector([])


def _bitten_boards() -> tuple[np.ndarray, np.ndarray]:
    """(96, 96) uint8 template (dark copper: a track and a pad) and a tested board with a bite out of the track
    that the 2 px band sees and a shallower one out of the pad that only a 1 px band sees."""
    template = np.full((96, 96), 255, np.uint8)
    template[44:54, 6:90] = 0
    template[66:90, 30:66] = 0
    tested = template.copy()
    tested[48:54, 30:36] = 255  # 6 px deep
    tested[87:90, 40:48] = 255  # 3 px deep
    return tested, template


def test_the_finer_bands_candidates_must_reach_their_stricter_confidence() -> None:
    tested, template = _bitten_boards()
    net = _sure_net(3)
    with torch.no_grad():
        net.classify.bias[3] = float(np.log(24.0))  # every window a mousebite at 24 / (24 + 6) = 0.8
    for fine_band, fine_min, boxes in ((0, 0.9, 1), (1, 0.9, 1), (1, 0.7, 2), (1, 0.4, 2)):
        found = LearnedDetector(
            net, BRIGHT, nms_iou=1.0, rule_families=(), fine_band=fine_band, fine_min_confidence=fine_min, edge_weight=1
        ).detect(tested, template)
        assert len(found) == boxes, (fine_band, fine_min)
        np.testing.assert_allclose(found.scores, 0.8, atol=1e-4)
        assert found.boxes[:, 1].min() < 54  # the deep bite, always (its cut stays min_confidence)
    strict = LearnedDetector(net, BRIGHT, nms_iou=1.0, rule_families=(), fine_band=1, min_confidence=0.85)
    assert len(strict.detect(tested, template)) == 0  # the finer band's cut is never below min_confidence
    assert LearnedDetector(net, BRIGHT).proposer.fine_k == 0
    with pytest.raises(ValueError, match="fine_k must be below"):
        LearnedDetector(net, BRIGHT, fine_band=2)
    with pytest.raises(ValueError, match="fine_min_confidence must lie"):
        LearnedDetector(net, BRIGHT, fine_band=1, fine_min_confidence=1.5)


def test_the_finer_bands_boxes_come_second_in_the_suppression() -> None:
    detector = LearnedDetector(_sure_net(3), BRIGHT, fine_band=1)
    boxes = np.array(
        [[0, 0, 40, 40], [5, 5, 20, 20], [100, 100, 120, 120], [101, 101, 121, 121], [50, 50, 70, 70]], float
    )
    confidence = np.array([0.9, 0.99, 0.95, 0.92, 0.6])
    fine = np.array([False, True, True, True, False])
    # the piece inside a kept box is dropped without suppressing it; the finer band's others suppress one another
    assert detector._suppress(boxes, confidence, fine).tolist() == [2, 0, 4]
    assert detector._suppress(boxes, confidence, np.zeros(5, bool)).tolist() == [1, 2, 0, 4]  # plain NMS
    assert detector._suppress(boxes[1:4], confidence[1:4], fine[1:4]).tolist() == [0, 1]  # no box of the band


def test_a_piece_inside_a_more_confident_box_of_its_type_is_dropped() -> None:
    boxes = np.array([[0, 0, 40, 20], [30, 0, 60, 20], [45, 0, 60, 20], [0, 0, 10, 10], [100, 0, 120, 20]], float)
    kinds = np.array([2, 2, 2, 1, 2])
    order = np.array([0, 1, 2, 3, 4])  # most confident first
    # box 1 lies a third inside box 0 (kept), box 2 wholly inside box 1 (kept), box 3 inside box 0 but of another
    # type, box 4 apart
    assert drop_pieces(boxes, kinds, order, 0.5).tolist() == [0, 1, 3, 4]
    assert drop_pieces(boxes, kinds, order, 0.3).tolist() == [0, 2, 3, 4]  # 1 a piece; 2 then meets no kept box
    assert drop_pieces(boxes, kinds, np.array([2, 1, 0]), 0.5).tolist() == [2, 0]  # only a kept box takes pieces
    assert drop_pieces(boxes, kinds, order[:0], 0.5).tolist() == []


def test_the_detector_drops_pieces_and_ranks_the_edges_boxes_lower() -> None:
    tested, template = _bitten_boards()  # the shallow bite's padded box reaches the board's lower edge
    net, loose = _sure_net(3), {"rule_families": (), "fine_band": 1}
    plain = LearnedDetector(net, BRIGHT, **loose, piece_share=None, edge_weight=1.0).detect(tested, template)
    found = LearnedDetector(net, BRIGHT, **loose).detect(tested, template)  # the defaults: 0.5 and 0.5
    assert len(plain) == len(found) == 2 and np.all(plain.scores > 0.99)
    plain_edge, edge = at_edge(plain.boxes, tested.shape), at_edge(found.boxes, tested.shape)
    assert plain_edge.sum() == 1 and edge.tolist() == [False, True]  # the edge's box ranks last, at half
    np.testing.assert_allclose(found.scores, [plain.scores[~plain_edge][0], 0.5 * plain.scores[plain_edge][0]])
    assert at_edge(np.array([[1, 5, 9, 9], [2, 2, 8, 8], [3, 5, 9, 15]], float), (15, 10)).tolist() == [
        True,
        False,
        True,
    ]
    tested[48:54, 43:49] = 255  # a second bite 7 px from the deep one: proposed apart, the boxes half over each other
    apart = LearnedDetector(net, BRIGHT, rule_families=(), nms_iou=1.0, piece_share=None)
    assert len(apart.detect(tested, template)) == 2
    assert len(LearnedDetector(net, BRIGHT, rule_families=(), nms_iou=1.0).detect(tested, template)) == 1
    for name in ("piece_share", "edge_weight"):
        with pytest.raises(ValueError, match=f"{name} must lie"):
            LearnedDetector(net, BRIGHT, **{name: 0.0})
