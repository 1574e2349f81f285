import pytest
import torch

from pcbsiam.config import ModelConfig
from pcbsiam.data.transforms import to_tensor
from pcbsiam.models.band import TileGate, band_defects, gated_scores


def _board(size: int = 48) -> torch.Tensor:
    """uint8 copper (255) tracks on dark substrate, shape (S, S) as numpy."""
    import numpy as np

    img = np.zeros((size, size), np.uint8)
    img[10:20, 4:44] = 255  # a 10 px wide track
    img[28:40, 20:30] = 255  # a pad
    return img


def _norm(img) -> torch.Tensor:
    return to_tensor([img], img.shape[0])


def test_identical_and_slightly_shifted_patches_give_no_defect_pixels() -> None:
    import numpy as np

    ref = _board()
    assert band_defects(_norm(ref), _norm(ref), radius=2).sum() == 0
    shifted = np.roll(ref, (2, -2), axis=(0, 1))  # within the band
    assert band_defects(_norm(shifted), _norm(ref), radius=2).sum() == 0
    # beyond the band the edges light up
    assert band_defects(_norm(np.roll(ref, 4, axis=0)), _norm(ref), radius=2).sum() > 0


def test_extra_and_missing_copper_are_found_where_they_are() -> None:
    ref = _board()
    tested = ref.copy()
    tested[2:5, 30:34] = 255  # spurious copper 5 px away from the track
    tested[14:16, 10:12] = 0  # a pin-hole deep inside the track
    out = band_defects(_norm(tested), _norm(ref), radius=2)
    assert out.shape == (1, 1, 48, 48)
    hits = out[0, 0].nonzero().tolist()
    assert {(y, x) for y, x in hits} == {(y, x) for y in range(2, 5) for x in range(30, 34)} | {
        (y, x) for y in range(14, 16) for x in range(10, 12)
    }


def test_a_defect_within_the_band_of_an_edge_is_tolerated() -> None:
    ref = _board()
    tested = ref.copy()
    tested[20:22, 8:12] = 255  # a 2 px spur on the track's edge: inside the 2 px band, as classically
    assert band_defects(_norm(tested), _norm(ref), radius=2).sum() == 0
    assert band_defects(_norm(tested), _norm(ref), radius=1).sum() > 0


def test_gate_window_and_radius_follow_the_geometry() -> None:
    assert TileGate.of(ModelConfig(), 128, 16) is None  # off by default
    gate = TileGate.of(ModelConfig(gate=0, gate_margin=4, band=3, input_size=160), 128, 16)
    assert gate is not None and gate.window == (12, 148) and gate.radius == 3
    half = TileGate.of(ModelConfig(gate=2, gate_margin=4, input_size=80), 128, 16)
    assert half is not None and half.window == (6, 74) and half.radius == 2 and half.max_pixels == 2


def test_gate_keeps_pairs_with_a_difference_in_the_tile_or_its_margin_only() -> None:
    import numpy as np

    # a 48 px crop: a 32 px tile with 8 px of context; margin 2 -> window [6, 42)
    gate = TileGate.of(ModelConfig(gate=0, gate_margin=2, input_size=48), 32, 8)
    ref = _board()
    inside, margin, far = ref.copy(), ref.copy(), ref.copy()
    inside[2 + 20 : 5 + 20, 34:37] = 255  # spurious copper inside the tile
    margin[41:44, 6:9] = 255  # touching the window's last rows
    far[45:48, 0:3] = 255  # in the context, beyond the margin
    tested = torch.cat([_norm(x) for x in (ref, inside, margin, far)])
    keep = gate.keep(tested, _norm(ref).expand(4, -1, -1, -1))
    assert keep.tolist() == [False, True, True, False]
    calls = []

    def score(sel: torch.Tensor) -> torch.Tensor:
        calls.append(int(sel.sum()))
        return torch.arange(4.0)[sel] + 10

    out = gated_scores(gate, tested, _norm(ref).expand(4, -1, -1, -1), score, -20.0)
    assert out.tolist() == [-20.0, 11.0, 12.0, -20.0] and calls == [2]
    assert gated_scores(None, tested, tested, score, -20.0).tolist() == [10.0, 11.0, 12.0, 13.0]
    assert np.all(gated_scores(gate, tested[:1], tested[:1], score, 0.0).numpy() == 0.0) and calls == [2, 4]


@pytest.mark.parametrize("radius", [1, 2, 3])
def test_separable_dilation_equals_square_max_pooling(radius: int) -> None:
    """The running maximum of shifted copies is a (2r+1)-square dilation, borders included."""
    import torch.nn.functional as F

    from pcbsiam.models.band import _dilate

    mask = (torch.rand(3, 1, 23, 31, generator=torch.Generator().manual_seed(radius)) > 0.8).float()
    mask[0, 0, 0, 0] = mask[1, 0, -1, -1] = 1.0  # corners: the padding must not count
    want = F.max_pool2d(mask, 2 * radius + 1, stride=1, padding=radius)
    assert torch.equal(_dilate(mask, radius), want)


def test_gate_on_uint8_crops_equals_the_gate_on_normalised_tensors() -> None:
    """keep_crops binarises through the tensors' own normalisation (grey levels next to the cut included) and
    dilates booleans: the same verdicts as keep; crops of another size than the input are left to keep."""
    import numpy as np

    gate = TileGate.of(ModelConfig(mode="stack", band=2, gate=0, input_size=48), 32, 8)
    assert gate is not None and gate.input_size == 48
    rng = np.random.default_rng(0)
    blocks = (rng.random((40, 6, 6)) > 0.5).astype(np.uint8) * 255
    tested = np.kron(blocks, np.ones((8, 8), np.uint8))  # 8 px squares of copper and bare board
    reference = tested.copy()
    for b in range(0, 40, 2):  # a small difference somewhere in every other pair (inside the window or not)
        y, x = rng.integers(0, 44, 2)
        reference[b, y : y + 3, x : x + 3] ^= 255
    near = rng.random(tested.shape) < 0.002
    near[:20] = False  # grey levels on either side of the cut in the last 20 pairs only
    tested[near] = rng.choice([126, 127, 128, 129], int(near.sum()))
    want = gate.keep(to_tensor(list(tested), 48), to_tensor(list(reference), 48)).numpy()
    got = gate.keep_crops(tested, reference)
    assert got is not None and np.array_equal(got, want) and 0 < want.sum() < 40
    assert gate.keep_crops(tested[:, :40, :40], reference[:, :40, :40]) is None
