"""Tests of the synthetic DeepPCB-like board generator."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pcbsiam.data.defects import DEFECT_CODES, DEFECT_TYPES
from pcbsiam.data.synth import (
    SyntheticPair,
    SynthStyle,
    copper_edges,
    generate_pair,
    style_for_group,
    write_dataset,
)

SIZE = 256
ADDITIVE = {DEFECT_CODES["short"], DEFECT_CODES["spur"], DEFECT_CODES["spurious_copper"]}


def _pair(seed: int, size: int = SIZE, **kw) -> SyntheticPair:
    return generate_pair(np.random.default_rng(seed), size=size, **kw)


def _moved(img: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """Reference shift: out[y + dy, x + dx] = img[y, x], background elsewhere."""
    out = np.zeros_like(img)
    h, w = img.shape
    for y in range(h):
        if 0 <= y + dy < h:
            xs = np.arange(w)
            ok = (xs + dx >= 0) & (xs + dx < w)
            out[y + dy, xs[ok] + dx] = img[y, xs[ok]]
    return out


@pytest.fixture(scope="module")
def pairs() -> list[SyntheticPair]:
    return [_pair(seed, n_defects=(6, 12), style=style_for_group(seed % 4)) for seed in range(6)]


def test_shapes_and_dtypes(pairs: list[SyntheticPair]) -> None:
    for p in pairs:
        assert p.template.shape == p.tested.shape == p.tested_clean.shape == (SIZE, SIZE)
        assert p.template.dtype == p.tested.dtype == np.uint8
        assert p.boxes.dtype == np.int64 and p.boxes.ndim == 2 and p.boxes.shape[1] == 5
        assert set(np.unique(p.template)) <= {0, 255} and 0.02 < np.mean(p.template > 0) < 0.8
        assert isinstance(p.shift, tuple) and all(isinstance(v, int) for v in p.shift)


def test_same_seed_same_pair_and_different_seed_differs() -> None:
    a, b, c = _pair(3), _pair(3), _pair(4)
    for name in ("template", "tested", "boxes"):
        assert np.array_equal(getattr(a, name), getattr(b, name))
    assert a.shift == b.shift
    assert not np.array_equal(a.template, c.template)


def test_boxes_valid_and_disjoint(pairs: list[SyntheticPair]) -> None:
    for p in pairs:
        assert len(p.boxes) >= 1
        x1, y1, x2, y2, t = p.boxes.T
        assert np.all((x1 >= 0) & (y1 >= 0) & (x2 <= SIZE) & (y2 <= SIZE))
        assert np.all((x2 > x1) & (y2 > y1))
        assert set(t.tolist()) <= set(DEFECT_TYPES)
        for i, a in enumerate(p.boxes):
            for b in p.boxes[i + 1 :]:
                assert a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1], (a, b)


def test_changed_pixels_lie_inside_their_boxes(pairs: list[SyntheticPair]) -> None:
    for p in pairs:
        diff = p.tested_clean != _moved(p.template, *p.shift)
        owner = np.zeros(diff.shape, np.int32)
        for k, (x1, y1, x2, y2, _) in enumerate(p.boxes, start=1):
            region = diff[y1:y2, x1:x2]
            assert region.any(), "a box without a defect"
            ys, xs = np.nonzero(region)
            size = max(xs.max() - xs.min() + 1, ys.max() - ys.min() + 1)
            assert 6 <= size <= 40, size
            owner[y1:y2, x1:x2] = k
        assert not np.any(diff & (owner == 0)), "changed pixels outside every box"


def test_defects_absent_from_template(pairs: list[SyntheticPair]) -> None:
    for p in pairs:
        ref = _moved(p.template, *p.shift)
        for x1, y1, x2, y2, t in p.boxes:
            before, after = ref[y1:y2, x1:x2], p.tested_clean[y1:y2, x1:x2]
            changed = before != after
            if t in ADDITIVE:  # copper that the template does not have
                assert np.all(after[changed] == 255) and np.all(before[changed] == 0)
            else:  # copper missing from the tested board
                assert np.all(after[changed] == 0) and np.all(before[changed] == 255)


def test_all_six_types_appear() -> None:
    seen: set[int] = set()
    for seed in range(8):
        seen |= set(_pair(100 + seed, n_defects=(8, 12)).boxes[:, 4].tolist())
        if len(seen) == 6:
            break
    assert seen == set(DEFECT_TYPES)


def test_shift_within_max_shift() -> None:
    shifts = [_pair(seed, style=SynthStyle(max_shift=5), n_defects=(0, 0)).shift for seed in range(12)]
    assert all(abs(dy) <= 5 and abs(dx) <= 5 for dy, dx in shifts)
    assert len(set(shifts)) > 1
    p = _pair(1, style=SynthStyle(max_shift=0, edge_noise=0.0), n_defects=(0, 0))
    assert p.shift == (0, 0) and len(p.boxes) == 0
    assert np.array_equal(p.tested, p.template)


def test_edge_noise_only_on_copper_edges(pairs: list[SyntheticPair]) -> None:
    for p in pairs:
        noise = p.tested != p.tested_clean
        assert noise.any()
        assert not np.any(noise & ~copper_edges(p.tested_clean))


def test_full_size_pair_has_requested_defect_count() -> None:
    p = _pair(7, size=640, n_defects=(3, 12))
    assert p.template.shape == (640, 640)
    assert 3 <= len(p.boxes) <= 12


def test_style_for_group_is_deterministic_and_distinct() -> None:
    styles = [style_for_group(g) for g in range(6)]
    assert styles[2] == style_for_group(2)
    assert len(set(styles)) == 6
    boards = [_pair(0, style=s, n_defects=(0, 0)).template for s in styles[:3]]
    assert not np.array_equal(boards[0], boards[1]) and not np.array_equal(boards[1], boards[2])


def test_invalid_style_is_rejected() -> None:
    with pytest.raises(ValueError):
        SynthStyle(trace_width=(9, 5))
    with pytest.raises(ValueError):
        SynthStyle(pitch=14, trace_width=(5, 9))
    with pytest.raises(ValueError):
        dataclasses.replace(SynthStyle(), pad_size=(10, 500))


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_write_dataset_layout(tmp_path: Path) -> None:
    calls: list[tuple[int, int]] = []
    split = write_dataset(
        tmp_path, boards=5, seed=11, size=192, groups=2, progress=lambda done, total: calls.append((done, total))
    )
    assert split == tmp_path / "PCBData" / "trainval.txt"
    assert calls == [(i, 5) for i in range(1, 6)]
    text = split.read_text()
    assert text.endswith("\n")
    lines = text.splitlines()
    assert lines[:3] == [
        "group10000/10000/10000000.jpg group10000/10000_not/10000000.txt",
        "group11000/11000/11000000.jpg group11000/11000_not/11000000.txt",
        "group10000/10000/10000001.jpg group10000/10000_not/10000001.txt",
    ]
    pattern = re.compile(r"^group(\d{5})/(\d{5})/(\d{8})\.jpg group(\d{5})/(\d{5})_not/(\d{8})\.txt$")
    children = np.random.SeedSequence(11).spawn(5)
    for b, line in enumerate(lines):
        m = pattern.match(line)
        assert m and len(set(m.group(1, 2, 4, 5))) == 1 and m.group(3) == m.group(6)
        gdir = split.parent / f"group{m.group(1)}"
        name = m.group(3)
        for suffix in ("_test", "_temp"):
            with Image.open(gdir / m.group(1) / f"{name}{suffix}.jpg") as img:
                assert img.format == "JPEG" and img.mode == "L" and img.size == (192, 192)
        ann = (gdir / f"{m.group(1)}_not" / f"{name}.txt").read_text()
        rows = [list(map(int, r.split(" "))) for r in ann.splitlines()]
        assert all(len(r) == 5 for r in rows)
        expected = generate_pair(np.random.default_rng(children[b]), size=192, style=style_for_group(b % 2))
        assert rows == expected.boxes.tolist()
    assert not list(tmp_path.rglob("*.tmp*")), "temporary files left behind"


def test_write_dataset_is_byte_deterministic(tmp_path: Path) -> None:
    a = write_dataset(tmp_path / "a", boards=3, seed=5, size=160, groups=2)
    b = write_dataset(tmp_path / "b", boards=3, seed=5, size=160, groups=2)
    c = write_dataset(tmp_path / "c", boards=3, seed=6, size=160, groups=2)
    fa, fb, fc = _files(a.parent), _files(b.parent), _files(c.parent)
    assert len(fa) == 1 + 3 * 3
    assert fa == fb
    assert fa.keys() == fc.keys() and fa != fc


def test_written_files_have_dark_copper_like_deeppcb(tmp_path: Path) -> None:
    split = write_dataset(tmp_path, boards=1, seed=3, size=256, groups=1)
    image_rel = split.read_text().split()[0]
    stem = tmp_path / "PCBData" / image_rel.removesuffix(".jpg")
    written = np.asarray(Image.open(f"{stem}_temp.jpg"), dtype=np.int16)
    pair = generate_pair(np.random.default_rng(np.random.SeedSequence(3).spawn(1)[0]), 256, style=style_for_group(0))
    assert np.abs(written - (255 - pair.template.astype(np.int16))).mean() < 3
