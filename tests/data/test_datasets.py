from pathlib import Path

import numpy as np
import pytest

from pcbsiam.data.crops import PatchCropper, PatchSpec
from pcbsiam.data.datasets import PairDataset, PairTrainDataset, TripletDataset, sample_pairs
from pcbsiam.data.deeppcb import read_deeppcb
from pcbsiam.data.sources import patches_of
from pcbsiam.data.store import load_store, register_store
from pcbsiam.data.transforms import GREY_MEAN, GREY_STD, apply_dihedral, crop, to_tensor


def test_crop_pads_outside_the_image() -> None:
    img = np.arange(16, dtype=np.uint8).reshape(4, 4)
    assert crop(img, -1, -1, 2, 2, fill=9).tolist() == [[9, 9], [9, 0]]
    assert crop(img, 1, 1, 2, 2).tolist() == [[5, 6], [9, 10]]


def test_to_tensor_scales_and_resizes() -> None:
    t = to_tensor(np.full((2, 8, 8), 255, np.uint8), 16)
    assert t.shape == (2, 1, 16, 16)
    assert np.allclose(t.numpy(), (1.0 - GREY_MEAN) / GREY_STD, atol=1e-5)


def test_datasets_shapes_and_joint_augmentation(tiny_deeppcb: Path) -> None:
    store = load_store(read_deeppcb(tiny_deeppcb))
    index = patches_of(store, patch=32)
    t, r, label, group = PairDataset(store, index, PatchSpec(input_size=32))[0]
    assert t.shape == r.shape == (1, 32, 32) and label in (0, 1)
    trip = TripletDataset(store, index, np.array([[0, 1, 2]]), PatchSpec(input_size=16), augment=True)
    images, labels, groups = trip[0]
    assert images.shape == (3, 1, 16, 16) and labels.shape == (3,)
    items = sample_pairs(index.labels, 40, seed=1)
    assert abs(index.labels[items].mean() - 0.5) < 1e-9
    ds = PairTrainDataset(store, index, items, PatchSpec(input_size=32), augment=True, ref_shift=0, seed=3)
    for k in range(6):  # tested and reference always get the same flip/rotation
        tt, rr, _ = ds[k]
        i = int(items[k])
        crops = PatchCropper(store, index, PatchSpec())
        same = [
            np.allclose(tt[0].numpy(), to_tensor(apply_dihedral(crops.tested(i), q, f)[None], 32)[0, 0].numpy())
            and np.allclose(rr[0].numpy(), to_tensor(apply_dihedral(crops.reference(i), q, f)[None], 32)[0, 0].numpy())
            for q in range(4)
            for f in (False, True)
        ]
        assert any(same)


def test_photometric_pairs_render_tested_and_reference_apart(tiny_deeppcb: Path) -> None:
    store = load_store(read_deeppcb(tiny_deeppcb))
    index = patches_of(store, patch=32)
    crops = PatchCropper(store, index, PatchSpec())
    items = np.array([i for i in range(len(index)) if 40 < crops.tested(i).mean() < 215][:4])  # not flat
    assert len(items) == 4
    plain = PairTrainDataset(store, index, items, PatchSpec(input_size=32), seed=3)
    photo = PairTrainDataset(store, index, items, PatchSpec(input_size=32), seed=3, photometric=True)
    for k in range(4):
        (t0, r0, y0), (t1, r1, y1) = plain[k], photo[k]
        assert y0 == y1 and t1.shape == t0.shape
        assert not np.allclose(t0.numpy(), t1.numpy()) and not np.allclose(r0.numpy(), r1.numpy())
        assert not np.allclose((t1 - t0).numpy(), (r1 - r0).numpy())  # each patch its own rendering
        np.testing.assert_array_equal(photo[k][0].numpy(), t1.numpy())  # drawn from the seed and the item
    trip = TripletDataset(store, index, items[None, :3], PatchSpec(input_size=16), photometric=True)
    plain_trip = TripletDataset(store, index, items[None, :3], PatchSpec(input_size=16))
    assert not np.allclose(trip[0][0].numpy(), plain_trip[0][0].numpy())


def test_registered_store_moves_reference_crops(tiny_deeppcb: Path) -> None:
    store = load_store(read_deeppcb(tiny_deeppcb))
    store.reference[0] = np.roll(store.tested[0], (2, -3), axis=(0, 1))  # reference = tested moved
    register_store(store.subset([0]))  # subsets get their own shifts
    assert store.shifts is None
    register_store(store)
    assert tuple(store.shifts[0]) == (-2, 3)
    assert store.subset([1, 0]).shifts.tolist() == [store.shifts[1].tolist(), [-2, 3]]  # subsets keep them
    index = patches_of(store, patch=32)
    i = int(np.flatnonzero(index.rows["board"] == 0)[5])
    c = PatchCropper(store, index, PatchSpec())
    assert np.array_equal(c.tested(i), c.reference(i))


def test_sample_pairs_needs_both_classes() -> None:
    with pytest.raises(ValueError, match="both classes"):
        sample_pairs(np.zeros(5, int), 4)


def test_context_crops_hold_the_patch_in_their_centre(tiny_deeppcb: Path) -> None:
    store = load_store(read_deeppcb(tiny_deeppcb))
    index = patches_of(store, patch=32)
    plain, wide = PatchCropper(store, index, PatchSpec()), PatchCropper(store, index, PatchSpec(context=6))
    corner = int(np.flatnonzero((index.rows["y"] == 0) & (index.rows["x"] == 0))[0])
    for i in (corner, len(index) // 2):
        for a, b in ((plain.tested(i), wide.tested(i)), (plain.reference(i), wide.reference(i))):
            assert b.shape == (44, 44)
            assert np.array_equal(b[6:-6, 6:-6], a)
    board = int(index.rows[corner]["board"])
    assert (wide.tested(corner)[:6] == int(np.median(store.tested[board]))).all()  # beyond the edge: background
    assert wide.reference_box(corner) == (-6, -6, 44, 44)
    t, r, _, _ = PairDataset(store, index, PatchSpec(input_size=44, context=6))[corner]
    assert t.shape == r.shape == (1, 44, 44)
    with pytest.raises(ValueError, match="context"):
        PatchCropper(store, index, PatchSpec(context=-1))


def test_local_refinement_and_shared_padding(tiny_deeppcb: Path) -> None:
    store = load_store(read_deeppcb(tiny_deeppcb))
    tested = store.tested[0]
    rolled = np.roll(tested, (2, -3), axis=(0, 1))
    rolled[:, :2] = rolled[:, -2:] = 0  # no wrapped content in the local window of the checked patch
    store.reference[0] = rolled
    register_store(store, max_shift=1, local_shift=3)  # the global search cannot reach (2, -3)
    assert store.local_shift == 3 and store.subset([0]).local_shift == 3  # subsets keep it
    index = patches_of(store, patch=32)
    inner = (index.rows["board"] == 0) & (index.rows["y"] > 0) & (index.rows["x"] > 0)
    i = int(np.flatnonzero(inner & (index.rows["y"] + 32 < tested.shape[0]))[0])
    c = PatchCropper(store, index, PatchSpec())
    t, r = c.pair(i)
    assert np.array_equal(t, r) and np.array_equal(r, c.reference(i))
    y, x = int(index.rows[i]["y"]), int(index.rows[i]["x"])
    sy, sx = store.shifts[0]
    assert c.reference_box(i) == (y - sy + 2, x - sx - 3, 32, 32)
    assert c.reference_key(i)[1:] == c.reference_box(i)  # the cache key follows the refined crop
    # a border patch with context: the part beyond the tested image shows the reference's pixels
    wide = PatchCropper(store, index, PatchSpec(context=6))
    corner = int(np.flatnonzero((index.rows["board"] == 0) & (index.rows["y"] == 0) & (index.rows["x"] == 0))[0])
    t, r = wide.pair(corner)
    assert np.array_equal(t[:6], r[:6]) and np.array_equal(t[:, :6], r[:, :6])
