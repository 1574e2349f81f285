"""Reader of the DeepPCB layout exactly as in the public repository.

Layout (root = the folder holding ``PCBData/``, or ``PCBData/`` itself)::

    PCBData/<group>/<id>/<name>_test.jpg      tested image
    PCBData/<group>/<id>/<name>_temp.jpg      defect-free template
    PCBData/<group>/<id>_not/<name>.txt       one defect a line: x1 y1 x2 y2 type
    PCBData/trainval.txt                      "<group>/<id>/<name>.jpg <group>/<id>_not/<name>.txt"
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from pcbsiam.data.defects import DEFECT_TYPES
from pcbsiam.data.records import BoardList, BoardPair
from pcbsiam.errors import DataError

_SEP = re.compile(r"[,\s]+")


def find_pcbdata(root: str | Path) -> Path:
    """Locate the ``PCBData`` folder from a dataset root (a clone of DeepPCB) or the folder itself.

    Raises:
        DataError: neither ``root/PCBData`` nor ``root`` looks like the layout.
    """
    root = Path(root)
    for cand in (root / "PCBData", root):
        if cand.is_dir() and any(cand.glob("group*")):
            return cand
    raise DataError(root, "no DeepPCB layout here: expected a folder PCBData/ holding group*/ folders")


def parse_annotation(path: str | Path) -> np.ndarray:
    """Parse a DeepPCB annotation file (space- or comma-separated; may be empty).

    Returns:
        (N, 5) int64 rows ``x1 y1 x2 y2 type``.

    Raises:
        DataError: missing file, a malformed line, an unknown type or a degenerate box.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "annotation file not found")
    rows = []
    for lineno, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        fields = [f for f in _SEP.split(line) if f]
        try:
            values = [int(round(float(f))) for f in fields]
        except ValueError:
            values = []
        if len(values) != 5:
            raise DataError(path, f"line {lineno} {line!r} is not 'x1 y1 x2 y2 type'")
        x1, y1, x2, y2, kind = values
        if kind not in DEFECT_TYPES:
            raise DataError(path, f"line {lineno}: unknown defect type {kind} (expected 1-6)")
        if x2 <= x1 or y2 <= y1:
            raise DataError(path, f"line {lineno}: empty box {x1} {y1} {x2} {y2} (needs x2>x1 and y2>y1)")
        if min(x1, y1) < 0:
            raise DataError(path, f"line {lineno}: box {x1} {y1} {x2} {y2} has negative coordinates")
        rows.append(values)
    return np.asarray(rows, dtype=np.int64).reshape(-1, 5)


def _group_of(image_rel: str) -> str:
    first = Path(image_rel).parts[0]
    return first if first.startswith("group") else f"group{first}"


def read_deeppcb(root: str | Path, split: str | Path = "trainval.txt", strict: bool = False) -> BoardList:
    """Read the items a DeepPCB split file lists.

    Args:
        root: folder holding ``PCBData/`` (a clone of the repository) or ``PCBData/`` itself.
        split: split file name inside ``PCBData/`` (``trainval.txt``, ``test.txt``) or a path to any
            list in that format.
        strict: raise on the first bad item instead of skipping it.

    Returns:
        The readable items; bad ones (missing image, bad annotation) are in ``skipped``.

    Raises:
        DataError: the split file is missing or empty (always), or a bad item when ``strict``.
    """
    base = find_pcbdata(root)
    split_path = Path(split)
    if not split_path.is_file():
        split_path = base / split
    if not split_path.is_file():
        raise DataError(split_path, "split file not found (expected e.g. trainval.txt or test.txt in PCBData/)")
    out = BoardList([])
    for lineno, line in enumerate(split_path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            fields = line.split()
            if len(fields) != 2:
                raise DataError(split_path, f"line {lineno} {line!r} is not '<image path> <annotation path>'")
            image_rel, ann_rel = fields
            stem = base / Path(image_rel).with_suffix("")
            ext = Path(image_rel).suffix or ".jpg"
            tested = stem.parent / f"{stem.name}_test{ext}"
            template = stem.parent / f"{stem.name}_temp{ext}"
            for p in (tested, template):
                if not p.is_file():
                    raise DataError(p, f"named by {split_path.name} line {lineno} but not found")
            boxes = parse_annotation(base / ann_rel)
            out.pairs.append(BoardPair(stem.name, _group_of(image_rel), tested, template, boxes))
        except DataError as err:
            if strict:
                raise
            out.skipped.append(err)
    if not out.pairs and not out.skipped:
        raise DataError(split_path, "split file lists no items")
    return out
