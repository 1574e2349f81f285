from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pcbsiam.data.paper import is_paper_layout, pcb_type_of, read_paper_layout
from pcbsiam.data.sources import patches_of, read_boards
from pcbsiam.data.store import load_store
from pcbsiam.errors import DataError
from tests.conftest import board


def make_paper(root: Path) -> Path:
    for d in ("true", "false", "standard"):
        (root / d).mkdir(parents=True)
    for t in ("A1", "B2"):
        Image.fromarray(board(hash(t) % 100, 64)).save(root / "standard" / f"{t}.png")
        for k in range(2):
            Image.fromarray(board(k, 64)).save(root / "true" / f"{t}_{k}_x.png")
            Image.fromarray(board(k + 5, 64)).save(root / "false" / f"{t}_{k}.jpg")
    return root


def test_paper_layout_reads_types_labels_and_standards(tmp_path: Path) -> None:
    root = make_paper(tmp_path)
    assert is_paper_layout(root)
    boards = read_boards(root)
    assert len(boards.pairs) == 8 and boards.groups == ["A1", "B2"]
    for p in boards.pairs:
        assert p.template.name == f"{p.group}.png"
        assert p.label == (1 if p.tested.parent.name == "true" else 0)
    index = patches_of(load_store(boards))
    assert len(index) == 8 and index.stats()["defective"] == 4
    assert np.all(index.rows["h"] == 64)


def test_type_without_standard_is_skipped_or_raises(tmp_path: Path) -> None:
    root = make_paper(tmp_path)
    Image.fromarray(board(1, 64)).save(root / "true" / "ZZ_1.png")
    boards = read_paper_layout(root)
    assert len(boards.pairs) == 8
    assert "ZZ" in str(boards.skipped[0]) and "no standard board" in str(boards.skipped[0])
    with pytest.raises(DataError, match="ZZ_1.png"):
        read_paper_layout(root, strict=True)


def test_missing_folder(tmp_path: Path) -> None:
    (tmp_path / "true").mkdir()
    with pytest.raises(DataError, match="false"):
        read_paper_layout(tmp_path)


def test_pcb_type_prefix() -> None:
    assert pcb_type_of(Path("X9_a_b.png")) == "X9"
    assert pcb_type_of(Path("plain.png")) == "plain"
