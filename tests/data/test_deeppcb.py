from pathlib import Path

import numpy as np
import pytest

from pcbsiam.data.crops import PatchSpec
from pcbsiam.data.deeppcb import find_pcbdata, parse_annotation, read_deeppcb
from pcbsiam.errors import DataError
from tests.conftest import write_deeppcb


def test_reads_layout_and_groups(tiny_deeppcb: Path) -> None:
    boards = read_deeppcb(tiny_deeppcb)
    assert len(boards.pairs) == 8 and not boards.skipped
    assert boards.groups == ["group12000", "group13000"]
    p = boards.pairs[0]
    assert p.tested.name == "12000000_test.jpg" and p.template.name == "12000000_temp.jpg"
    assert p.boxes.tolist() == [[10, 10, 22, 22, 1]]
    assert boards.pairs[3].boxes.shape == (0, 5)  # empty annotation file


def test_root_may_be_pcbdata_itself_and_split_a_path(tiny_deeppcb: Path) -> None:
    assert find_pcbdata(tiny_deeppcb / "PCBData") == tiny_deeppcb / "PCBData"
    boards = read_deeppcb(tiny_deeppcb / "PCBData", tiny_deeppcb / "PCBData" / "trainval.txt")
    assert len(boards.pairs) == 8


@pytest.mark.parametrize(
    "text, expected",
    [
        ("1 2 30 40 3\n", [[1, 2, 30, 40, 3]]),
        ("1,2,30,40,3\n5, 6, 7, 8, 6\n", [[1, 2, 30, 40, 3], [5, 6, 7, 8, 6]]),
        ("", []),
        ("\n  \n", []),
    ],
)
def test_parse_annotation_formats(tmp_path: Path, text: str, expected: list) -> None:
    f = tmp_path / "a.txt"
    f.write_text(text)
    assert parse_annotation(f).reshape(-1, 5).tolist() == expected


@pytest.mark.parametrize(
    "text, words",
    [
        ("10 10 5 20 1", "x2>x1"),
        ("10 10 20 10 1", "y2>y1"),
        ("1 2 3 4 9", "unknown defect type 9"),
        ("1 2 3", "is not"),
        ("a b c d e", "is not"),
        ("-1 2 30 40 1", "negative"),
    ],
)
def test_bad_annotation_names_file_and_problem(tmp_path: Path, text: str, words: str) -> None:
    f = tmp_path / "bad.txt"
    f.write_text(text)
    with pytest.raises(DataError, match=words) as info:
        parse_annotation(f)
    assert "bad.txt" in str(info.value)


def test_missing_file_in_split_is_skipped_and_listed(tiny_deeppcb: Path) -> None:
    (tiny_deeppcb / "PCBData" / "group12000" / "12000" / "12000001_temp.jpg").unlink()
    boards = read_deeppcb(tiny_deeppcb)
    assert len(boards.pairs) == 7
    assert len(boards.skipped) == 1 and "12000001_temp.jpg" in str(boards.skipped[0])
    with pytest.raises(DataError, match="not found"):
        read_deeppcb(tiny_deeppcb, strict=True)


def test_missing_split_and_layout(tmp_path: Path, tiny_deeppcb: Path) -> None:
    with pytest.raises(DataError, match="no DeepPCB layout"):
        read_deeppcb(tmp_path / "nowhere")
    with pytest.raises(DataError, match="split file not found"):
        read_deeppcb(tiny_deeppcb, "test.txt")


def test_rgb_and_comma_separated(tmp_path: Path) -> None:
    write_deeppcb(tmp_path, {"12000000": [(1, 2, 13, 14, 2)]}, rgb=True, sep=",")
    boards = read_deeppcb(tmp_path)
    assert boards.pairs[0].boxes.tolist() == [[1, 2, 13, 14, 2]]


def test_shared_trainval_lists_1000_pairs(shared_deeppcb: Path) -> None:
    boards = read_deeppcb(shared_deeppcb, "trainval.txt")
    assert len(boards.pairs) == 1000 and not boards.skipped
    assert len(boards.groups) == 7
    assert all(np.all(p.boxes[:, 2] > p.boxes[:, 0]) for p in boards.pairs)


def test_a_few_real_boards_decode_and_cut(shared_deeppcb: Path) -> None:
    from pcbsiam.data.datasets import PairDataset
    from pcbsiam.data.records import BoardList
    from pcbsiam.data.sources import patches_of
    from pcbsiam.data.store import load_store

    boards = read_deeppcb(shared_deeppcb, "trainval.txt")
    some = BoardList([p for p in boards.pairs if p.name in {"00041000", "20085000", "92000001"}])
    store = load_store(some)
    assert len(store) == 3 and not store.skipped
    assert all(t.shape == (640, 640) and t.dtype == np.uint8 for t in store.tested)
    index = patches_of(store)
    assert 0 < len(index) <= 75 and index.stats()["defective"] > 0
    tested, reference, label, _ = PairDataset(store, index, PatchSpec())[0]
    assert tested.shape == reference.shape == (1, 128, 128)
    assert float((tested - reference).abs().mean()) < 0.5  # a patch and its template crop look alike
