import torch

from pcbsiam.data.transforms import to_tensor
from pcbsiam.models.band import band_defects


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
