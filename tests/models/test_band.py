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
