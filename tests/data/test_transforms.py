import numpy as np
import pytest

from pcbsiam.data.transforms import Photometric, crop, crop_pair, inside, random_photometric, refine_shift


def _board(size: int = 96, seed: int = 0) -> np.ndarray:
    """Random binary blobs: every shift of it looks different."""
    rng = np.random.default_rng(seed)
    coarse = rng.random((size // 8, size // 8)) > 0.5
    return (np.kron(coarse, np.ones((8, 8), bool)) * 255).astype(np.uint8)


def test_inside_marks_the_pixels_within_the_image() -> None:
    m = inside(-1, 3, 3, 4, (4, 5))
    assert m.shape == (3, 4)
    assert m.tolist() == [[False] * 4, [True, True, False, False], [True, True, False, False]]


def test_crop_pair_agrees_wherever_either_image_has_nothing() -> None:
    big = _board(128)
    tested, reference = big[5:101, 2:98], big[2:98, 4:100]  # tested[y, x] = reference[y + 3, x - 2]
    for box in [(-8, -8, 40, 40), (70, 70, 40, 40), (30, 30, 20, 20)]:
        y, x, h, w = box
        t, r = crop_pair(tested, reference, box, (y + 3, x - 2, h, w), fill=7)
        assert np.array_equal(t, r)  # the same content, and the padding never differs
    # where both have content the crops are the images' own
    t, r = crop_pair(tested, reference, (-8, -8, 40, 40), (-5, -10, 40, 40), fill=7)
    assert np.array_equal(t[8:, 10:], tested[:32, 2:32]) and (r[:5] == 7).all()


def test_crop_pair_keeps_a_difference_inside_both_images() -> None:
    reference = _board(64)
    tested = reference.copy()
    tested[20:24, 20:24] = 255 - tested[20:24, 20:24]
    t, r = crop_pair(tested, reference, (-4, -4, 40, 40), (-4, -4, 40, 40), fill=0)
    assert (t != r).sum() == 16


@pytest.mark.parametrize("move", [(0, 0), (2, -1), (-3, 3)])
def test_refine_shift_finds_a_local_misalignment(move: tuple[int, int]) -> None:
    big = _board(128, seed=1)
    tested = big[16:112, 16:112]
    reference = big[16 - move[0] : 112 - move[0], 16 - move[1] : 112 - move[1]]
    box = (30, 30, 40, 40)
    # the reference crop at the same box is off by `move`; the refinement moves it back
    assert refine_shift(tested, reference, box, box, radius=3) == move
    y, x, h, w = box
    dy, dx = move
    assert np.array_equal(crop(tested, *box), crop(reference, y + dy, x + dx, h, w))


def test_refine_shift_stays_put_without_evidence_and_within_its_radius() -> None:
    flat = np.full((64, 64), 200, np.uint8)
    assert refine_shift(flat, flat, (10, 10, 20, 20), (10, 10, 20, 20), radius=3) == (0, 0)
    assert refine_shift(flat, flat, (10, 10, 20, 20), (10, 10, 20, 20), radius=0) == (0, 0)
    big = _board(128, seed=2)
    tested, reference = big[16:112, 16:112], big[10:106, 16:112]  # 6 px away: beyond a radius of 2
    dy, dx = refine_shift(tested, reference, (30, 30, 40, 40), (30, 30, 40, 40), radius=2)
    assert max(abs(dy), abs(dx)) <= 2


def _refine_by_loop(tested, reference, box, reference_box, radius):  # noqa: ANN001, ANN202
    """The plain loop over moves that refine_shift vectorises: least mean absolute difference over the
    pixels both crops have, then the smallest move, then the first in row-major order."""
    from pcbsiam.data.transforms import crop, inside

    y, x, h, w = reference_box
    t = crop(tested, *box, fill=0).astype(np.int16)
    t_ok = inside(*box, tested.shape)
    big = crop(reference, y - radius, x - radius, h + 2 * radius, w + 2 * radius, fill=0).astype(np.int16)
    big_ok = inside(y - radius, x - radius, h + 2 * radius, w + 2 * radius, reference.shape)
    best, best_key = (0, 0), None
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            sl = (slice(radius + dy, radius + dy + h), slice(radius + dx, radius + dx + w))
            ok = t_ok & big_ok[sl]
            if ok.any():
                key = (float(np.abs(t - big[sl])[ok].mean()), abs(dy) + abs(dx))
                if best_key is None or key < best_key:
                    best, best_key = (dy, dx), key
    return best


def test_refine_shift_equals_the_loop_over_moves_at_borders_and_ties() -> None:
    from pcbsiam.data.transforms import refine_shift

    rng = np.random.default_rng(7)
    for trial in range(30):
        img = ((rng.random((120, 120)) > 0.6) * int(rng.integers(100, 255))).astype(np.uint8)
        if trial % 5 == 0:
            img[:] = 128  # featureless: every move ties, the smallest wins
        ref = np.roll(img, tuple(int(v) for v in rng.integers(-3, 4, 2)), axis=(0, 1))
        for box in [(-16, -16, 56, 56), (0, 0, 48, 48), (80, 80, 56, 56), (30, 40, 32, 32)]:
            moved = (box[0] + int(rng.integers(-2, 3)), box[1] + int(rng.integers(-2, 3)), box[2], box[3])
            radius = int(rng.integers(1, 4))
            assert refine_shift(img, ref, box, moved, radius) == _refine_by_loop(img, ref, box, moved, radius)


def test_refine_shifts_of_a_tile_grid_equal_the_loop_over_moves_box_by_box() -> None:
    """The joint search (one difference map per move over the boxes' union, block sums per box) gives each
    box the move of the plain loop: tiles with context that leave the image, two global offsets, and a
    lone box outside the grid."""
    from pcbsiam.data.transforms import refine_shifts

    rng = np.random.default_rng(3)
    img = ((rng.random((96, 96)) > 0.5) * 200).astype(np.uint8)
    ref = np.roll(img, (2, -1), axis=(0, 1))
    ref[40:60, 40:60] = 90  # a local disagreement, so that boxes do not all pick the same move
    boxes = [(y - 8, x - 8, 48, 48) for y in range(0, 96, 32) for x in range(0, 96, 32)] + [(5, 7, 30, 30)]
    offsets = [(1, -2)] * 9 + [(0, 0)]
    reference_boxes = [(y + oy, x + ox, h, w) for (y, x, h, w), (oy, ox) in zip(boxes, offsets, strict=True)]
    got = refine_shifts(img, ref, boxes, reference_boxes, 3)
    want = [_refine_by_loop(img, ref, b, r, 3) for b, r in zip(boxes, reference_boxes, strict=True)]
    assert [tuple(int(v) for v in m) for m in got] == want
    assert len({tuple(m) for m in want}) > 1


def test_random_photometric_renders_another_scan_with_a_fixed_number_of_draws() -> None:
    board = np.full((48, 48), 220, np.uint8)
    board[:, 20:28] = 40  # a dark track on bright board, as DeepPCB
    a = random_photometric(board, np.random.default_rng(1))
    assert a.shape == board.shape and a.dtype == np.uint8
    np.testing.assert_array_equal(a, random_photometric(board, np.random.default_rng(1)))  # the seed decides
    outs = [random_photometric(board, np.random.default_rng(s)) for s in range(8)]
    assert len({o.tobytes() for o in outs}) == 8  # renderings differ (the test can fail)
    assert all(o[:, 22:26].mean() < 128 < o[:, :10].mean() for o in outs)  # the copper stays copper
    r1, r2 = np.random.default_rng(5), np.random.default_rng(5)
    random_photometric(board, r1)
    random_photometric(np.zeros((9, 9), np.uint8), r2, Photometric(blur=0.0, jpeg=0.0))
    assert r1.random() == r2.random()  # as many draws whatever is applied
    none = Photometric(gain=1.0, shift=0.0, blur=0.0, jpeg=0.0)
    np.testing.assert_array_equal(random_photometric(board, np.random.default_rng(0), none), board)
