from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pcbsiam.data.deeppcb import read_deeppcb
from pcbsiam.data.images import load_gray
from pcbsiam.data.store import load_store
from pcbsiam.errors import DataError


def test_load_gray_rgb_and_l(tmp_path: Path) -> None:
    arr = (np.arange(64 * 48) % 256).astype(np.uint8).reshape(48, 64)
    Image.fromarray(arr).convert("RGB").save(tmp_path / "a.png")
    out = load_gray(tmp_path / "a.png")
    assert out.shape == (48, 64) and out.dtype == np.uint8
    assert np.abs(out.astype(int) - arr).max() <= 1


@pytest.mark.parametrize("content", [b"not an image at all", b"\xff\xd8\xff\xe0" + b"\x00" * 20])
def test_non_image_and_truncated(tmp_path: Path, content: bytes) -> None:
    f = tmp_path / "bad.jpg"
    f.write_bytes(content)
    with pytest.raises(DataError, match="bad.jpg.*cannot be decoded"):
        load_gray(f)


def test_truncated_jpeg(tmp_path: Path) -> None:
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64), np.uint8)).save(tmp_path / "t.jpg")
    data = (tmp_path / "t.jpg").read_bytes()
    (tmp_path / "t.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="t.jpg"):
        load_gray(tmp_path / "t.jpg")


def test_store_skips_bad_items_and_names_them(tiny_deeppcb: Path) -> None:
    g = tiny_deeppcb / "PCBData" / "group12000" / "12000"
    Image.fromarray(np.zeros((80, 96), np.uint8)).save(g / "12000000_temp.jpg")  # size differs
    (g / "12000001_test.jpg").write_bytes(b"garbage")  # not an image
    ann = tiny_deeppcb / "PCBData" / "group12000" / "12000_not" / "12000002.txt"
    ann.write_text("90 90 120 95 1\n")  # box outside the 96 px image
    store = load_store(read_deeppcb(tiny_deeppcb))
    assert len(store) == 5
    msgs = "\n".join(str(e) for e in store.skipped)
    assert "12000000_temp.jpg" in msgs and "same size" in msgs
    assert "12000001_test.jpg" in msgs and "decoded" in msgs
    assert "12000002_test.jpg" in msgs and "outside" in msgs


def test_store_cache_round_trip(tiny_deeppcb: Path, tmp_path: Path) -> None:
    boards = read_deeppcb(tiny_deeppcb)
    first = load_store(boards, cache_dir=tmp_path / "cache")
    files = list((tmp_path / "cache").glob("boards-*.npy"))
    assert len(files) == 1
    second = load_store(boards, cache_dir=tmp_path / "cache")
    assert all(np.array_equal(a, b) for a, b in zip(first.tested, second.tested, strict=True))
    assert isinstance(np.asarray(second.reference[0]).base, np.memmap) or second.reference[0].base is not None


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_16_bit_images_are_scaled_not_clipped(tmp_path: Path, suffix: str) -> None:
    arr = (np.arange(64 * 48) % 256).astype(np.uint8).reshape(48, 64)
    Image.fromarray(arr.astype(np.uint16) * 257).save(tmp_path / f"a{suffix}")
    with Image.open(tmp_path / f"a{suffix}") as img:
        assert img.mode.startswith("I;16")  # really a 16-bit file
    np.testing.assert_array_equal(load_gray(tmp_path / f"a{suffix}"), arr)


def test_32_bit_and_float_images(tmp_path: Path) -> None:
    from pcbsiam.data.images import to_gray

    arr = (np.arange(16 * 16) % 256).astype(np.uint8).reshape(16, 16)
    np.testing.assert_array_equal(to_gray(Image.fromarray(arr.astype(np.int32) * 257)), arr)
    np.testing.assert_array_equal(to_gray(Image.fromarray(arr.astype(np.float32) / 255)), arr)
    with pytest.raises(ValueError, match="outside"):
        to_gray(Image.fromarray(np.full((4, 4), 2.0, np.float32)))
    with pytest.raises(ValueError, match="8 or 16 bits"):
        to_gray(Image.fromarray(np.full((4, 4), 70000, np.int32)))
