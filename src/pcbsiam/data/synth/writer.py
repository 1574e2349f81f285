"""On-disk data sets: synthetic pairs written as JPEGs, annotations and a split list in the DeepPCB layout."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from pcbsiam.data.records import SYNTHETIC_MARKER
from pcbsiam.data.synth.generate import generate_pair
from pcbsiam.data.synth.style import style_for_group
from pcbsiam.io import atomic_path, write_text


def group_id(group_index: int) -> int:
    """Five-digit DeepPCB-style group id of design ``group_index``: 10000, 11000, ..."""
    if not 0 <= group_index < 90:
        raise ValueError(f"group_index must be in 0..89, got {group_index}")
    return 10000 + 1000 * group_index


def _save_jpeg(path: Path, img: np.ndarray, dark_copper: bool = True) -> None:
    """Write (H, W) uint8 ``img`` atomically as a greyscale JPEG, quality 95.

    With ``dark_copper`` the image is inverted on the way out, so that files look like DeepPCB's
    (dark conductors on a light background) while arrays in memory keep copper = 255.
    """
    with atomic_path(path) as tmp:
        Image.fromarray(255 - img if dark_copper else img).convert("L").save(tmp, format="JPEG", quality=95)


def write_dataset(
    out: Path,
    boards: int,
    seed: int,
    size: int = 640,
    groups: int = 4,
    split_name: str = "trainval.txt",
    progress: Callable[[int, int], None] | None = None,
    dark_copper: bool = True,
) -> Path:
    """Write a synthetic dataset in the DeepPCB directory layout.

    Board ``b`` goes to group ``b % groups`` (style :func:`style_for_group`) as index ``b // groups``:
    ``out/PCBData/group<G>/<G>/<name>_test.jpg`` and ``<name>_temp.jpg``, annotations
    ``out/PCBData/group<G>/<G>_not/<name>.txt`` (``x1 y1 x2 y2 type`` per line) and the split file
    ``out/PCBData/<split_name>`` listing ``group<G>/<G>/<name>.jpg group<G>/<G>_not/<name>.txt``.
    The same ``seed`` gives byte-identical files.

    Args:
        out: Dataset root directory.
        boards: Number of board pairs.
        seed: Random seed.
        size: Image side in pixels.
        groups: Number of PCB designs (1..90).
        split_name: File name of the split list.
        progress: Called as ``progress(done, total)`` after each board.
        dark_copper: write conductors dark on a light background, as DeepPCB's files are.

    Returns:
        Path of the split file.
    """
    if boards < 0 or not 1 <= groups <= 90:
        raise ValueError(f"need boards >= 0 and 1 <= groups <= 90, got {boards}, {groups}")
    if boards > 1000 * groups:
        raise ValueError(f"at most 1000 boards per group ({1000 * groups} for {groups} groups)")
    root = Path(out) / "PCBData"
    styles = [style_for_group(g) for g in range(groups)]
    lines = []
    for b, child in enumerate(np.random.SeedSequence(seed).spawn(boards)):
        g, index = b % groups, b // groups
        gid = group_id(g)
        name = f"{gid:05d}{index:03d}"
        pair = generate_pair(np.random.default_rng(child), size=size, style=styles[g])
        img_dir, ann_dir = root / f"group{gid}" / f"{gid}", root / f"group{gid}" / f"{gid}_not"
        _save_jpeg(img_dir / f"{name}_test.jpg", pair.tested, dark_copper)
        _save_jpeg(img_dir / f"{name}_temp.jpg", pair.template, dark_copper)
        rows = "".join(" ".join(map(str, r)) + "\n" for r in pair.boxes.tolist())
        write_text(ann_dir / f"{name}.txt", rows)
        lines.append(f"group{gid}/{gid}/{name}.jpg group{gid}/{gid}_not/{name}.txt\n")
        if progress is not None:
            progress(b + 1, boards)
    split = root / split_name
    write_text(split, "".join(lines))
    marker = {"generator": "pcbsiam data synth", "boards": boards, "seed": seed, "size": size, "groups": groups}
    write_text(Path(out) / SYNTHETIC_MARKER, json.dumps(marker) + "\n")  # models trained here say so
    return split
