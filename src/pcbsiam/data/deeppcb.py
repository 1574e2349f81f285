"""Reader of the DeepPCB layout exactly as in the public repository.

Layout (root = the folder holding ``PCBData/``, or ``PCBData/`` itself)::

    PCBData/<group>/<id>/<name>_test.jpg      tested image
    PCBData/<group>/<id>/<name>_temp.jpg      defect-free template
    PCBData/<group>/<id>_not/<name>.txt       one defect a line: x1 y1 x2 y2 type
    PCBData/trainval.txt                      "<group>/<id>/<name>.jpg <group>/<id>_not/<name>.txt"

Result files of the dataset's detection benchmark (see ``docs/deeppcb-det.md``): one file
``<name>.txt`` per tested image, one detection a line ``x1,y1,x2,y2,confidence,type`` with ``type``
one of :data:`RESULT_TYPE_NAMES`; :func:`write_detections` and :func:`read_detections`.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from numpy.typing import ArrayLike

from pcbsiam.data.defects import DEFECT_CODES, DEFECT_TYPES
from pcbsiam.data.records import BoardList, BoardPair
from pcbsiam.errors import DataError
from pcbsiam.io import atomic_path

_SEP = re.compile(r"[,\s]+")

#: Type names of the benchmark's result files (DeepPCB ids 1..6). They differ from the project's own
#: names in :data:`pcbsiam.data.defects.DEFECT_TYPES` for 5 (``copper``) and 6 (``pin-hole``).
RESULT_TYPE_NAMES: dict[int, str] = {1: "open", 2: "short", 3: "mousebite", 4: "spur", 5: "copper", 6: "pin-hole"}

#: Every spelling :func:`read_detections` accepts in the type column (lower case) -> type code.
_RESULT_TYPE_CODES: dict[str, int] = {
    **{str(code): code for code in RESULT_TYPE_NAMES},
    **DEFECT_CODES,
    **{name: code for code, name in RESULT_TYPE_NAMES.items()},
}


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


def annotation_of(tested: str | Path) -> Path | None:
    """The DeepPCB annotation of a tested image in the layout, if there is one.

    ``<group>/<id>/<name>_test.jpg`` is annotated by ``<group>/<id>_not/<name>.txt``.

    Returns:
        The annotation file, or ``None`` when ``tested`` is not named ``<name>_test.<ext>`` or has none.
    """
    tested = Path(tested)
    name = tested.stem.removesuffix("_test")
    if name == tested.stem:
        return None
    path = tested.parent.parent / f"{tested.parent.name}_not" / f"{name}.txt"
    return path if path.is_file() else None


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


def _format_confidence(value: float) -> str:
    """``value`` with at most 6 decimals and no trailing zeros (``0.5``, ``1``, ``0.123457``)."""
    text = f"{float(value) + 0.0:.6f}".rstrip("0").rstrip(".")  # + 0.0 turns -0.0 into 0.0
    return text or "0"


def write_detections(folder: str | Path, name: str, detections: ArrayLike) -> Path:
    """Write one image's detections as a benchmark result file ``<folder>/<name>.txt`` (atomically).

    Each line is ``x1,y1,x2,y2,confidence,type`` without spaces: box corners rounded to the nearest
    integer (halves to even), the confidence with at most 6 decimals, the type by its benchmark name
    (:data:`RESULT_TYPE_NAMES`). Lines keep the order of ``detections``; no detections give an empty
    file, which the benchmark reads the same as no file.

    Args:
        folder: results folder (created if missing).
        name: the tested image's id, e.g. ``00041000`` for ``00041000_test.jpg``.
        detections: (N, 6) rows ``x1 y1 x2 y2 confidence type_code``, type codes 1..6.

    Returns:
        The path written.

    Raises:
        ValueError: a bad name, shape or value (non-finite, confidence outside [0, 1], unknown type,
            or a box that is empty before or after rounding).
    """
    if not name or name in (".", "..") or "/" in name or "\\" in name:
        raise ValueError(f"The result name {name!r} must be a plain file name such as '00041000' (no folders).")
    det = np.asarray(detections, dtype=np.float64)
    if det.size == 0:
        det = det.reshape(0, 6)
    if det.ndim != 2 or det.shape[1] != 6:
        raise ValueError(
            f"Detections must be an (N, 6) array 'x1 y1 x2 y2 confidence type'; got shape {tuple(det.shape)}."
        )
    lines = []
    for k, (x1, y1, x2, y2, conf, kind) in enumerate(det.tolist()):
        row = f"detection {k} ({x1:g} {y1:g} {x2:g} {y2:g} {conf:g} {kind:g})"
        if not np.all(np.isfinite([x1, y1, x2, y2, conf, kind])):
            raise ValueError(f"{row} holds a non-finite value; every value must be a finite number.")
        if not 0.0 <= conf <= 1.0:
            raise ValueError(f"{row}: confidence {conf:g} is outside [0, 1], which the benchmark requires.")
        if kind != int(kind) or int(kind) not in RESULT_TYPE_NAMES:
            raise ValueError(f"{row}: type code {kind:g} is not one of the DeepPCB codes 1..6.")
        if x2 <= x1 or y2 <= y1:
            raise ValueError(f"{row}: the box is empty; it needs x2 > x1 and y2 > y1.")
        corners = [round(v) for v in (x1, y1, x2, y2)]
        if corners[2] <= corners[0] or corners[3] <= corners[1]:
            raise ValueError(f"{row}: the box is empty once rounded to whole pixels {corners}; widen it.")
        lines.append(",".join([*map(str, corners), _format_confidence(conf), RESULT_TYPE_NAMES[int(kind)]]) + "\n")
    path = Path(folder) / f"{name}.txt"
    with atomic_path(path) as tmp:
        tmp.write_text("".join(lines))
    return path


def read_detections(path: str | Path) -> np.ndarray:
    """Read a benchmark result file written by :func:`write_detections` or by another detector.

    Lines are ``x1,y1,x2,y2,confidence,type``; spaces around the commas and blank lines are allowed,
    and so are whitespace-separated fields when a line has no comma. The type may be a benchmark name
    (``copper``, ``pin-hole``), a project name (``spurious_copper``, ``pin_hole``) or a code 1..6, in
    any case.

    Returns:
        (N, 6) float64 rows ``x1 y1 x2 y2 confidence type_code``, in file order.

    Raises:
        DataError: missing file, or a line that is malformed, has a confidence outside [0, 1], an
            unknown type or an empty box (the message names the line).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "result file not found")
    rows = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8-sig", errors="replace").splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        fields = [f.strip() for f in line.split(",")] if "," in line else line.split()
        if len(fields) != 6 or not all(fields):
            raise DataError(path, f"line {lineno} {line!r} is not 'x1,y1,x2,y2,confidence,type'")
        try:
            x1, y1, x2, y2, conf = (float(f) for f in fields[:5])
        except ValueError:
            raise DataError(path, f"line {lineno} {line!r}: the first five fields must be numbers") from None
        if not np.all(np.isfinite([x1, y1, x2, y2, conf])):
            raise DataError(path, f"line {lineno} {line!r} holds a non-finite number")
        kind = _RESULT_TYPE_CODES.get(fields[5].lower())
        if kind is None:
            known = ", ".join(RESULT_TYPE_NAMES.values())
            raise DataError(path, f"line {lineno}: unknown defect type {fields[5]!r} (expected one of {known} or 1-6)")
        if not 0.0 <= conf <= 1.0:
            raise DataError(path, f"line {lineno}: confidence {fields[4]} is outside [0, 1]")
        if x2 <= x1 or y2 <= y1:
            raise DataError(path, f"line {lineno}: empty box {x1:g} {y1:g} {x2:g} {y2:g} (needs x2>x1 and y2>y1)")
        rows.append([x1, y1, x2, y2, conf, float(kind)])
    return np.asarray(rows, dtype=np.float64).reshape(-1, 6)
