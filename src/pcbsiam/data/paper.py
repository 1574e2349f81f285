"""Reader of the paper's layout: labelled folders of local images and one standard board per type.

Layout::

    ROOT/true/<type>_<anything>.<ext>     defective images
    ROOT/false/<type>_<anything>.<ext>    defect-free images
    ROOT/standard/<type>.<ext>            the defect-free standard board of each PCB type
"""

from __future__ import annotations

from pathlib import Path

from pcbsiam.data.records import BoardList, BoardPair
from pcbsiam.errors import DataError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff"}


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def pcb_type_of(path: Path) -> str:
    """PCB type of an image: its file-name prefix before the first ``_`` (the whole stem if none)."""
    return path.stem.split("_", 1)[0]


def is_paper_layout(root: str | Path) -> bool:
    """Whether ``root`` holds ``true/``, ``false/`` and ``standard/`` folders."""
    root = Path(root)
    return all((root / d).is_dir() for d in ("true", "false", "standard"))


def read_paper_layout(root: str | Path, strict: bool = False) -> BoardList:
    """Read every image of ``root/true`` and ``root/false`` with its type's standard board.

    Args:
        root: the dataset folder.
        strict: raise on the first bad item instead of skipping it.

    Raises:
        DataError: a folder is missing or holds no image (always); a type without a standard board
            when ``strict``.
    """
    root = Path(root)
    for d in ("true", "false", "standard"):
        if not (root / d).is_dir():
            raise DataError(root / d, "folder missing: the paper layout needs true/, false/ and standard/")
    standards: dict[str, Path] = {}
    for p in _images(root / "standard"):
        if p.stem in standards:
            raise DataError(p, f"a second standard board for type {p.stem!r} (also {standards[p.stem].name})")
        standards[p.stem] = p
    out = BoardList([])
    for folder, label in (("true", 1), ("false", 0)):
        for img in _images(root / folder):
            kind = pcb_type_of(img)
            if kind not in standards:
                err = DataError(img, f"PCB type {kind!r} has no standard board at {root / 'standard'}/{kind}.<ext>")
                if strict:
                    raise err
                out.skipped.append(err)
                continue
            out.pairs.append(BoardPair(f"{folder}/{img.stem}", kind, img, standards[kind], label=label))
    if not out.pairs and not out.skipped:
        raise DataError(root, "no images in true/ or false/")
    return out
