"""DeepPCB benchmark result files: writing, reading and the errors for bad ones."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from pcbsiam.data.deeppcb import RESULT_TYPE_NAMES, read_detections, write_detections
from pcbsiam.errors import DataError


def test_type_names_are_the_protocol_spelling() -> None:
    assert RESULT_TYPE_NAMES == {1: "open", 2: "short", 3: "mousebite", 4: "spur", 5: "copper", 6: "pin-hole"}


def test_write_format_and_round_trip(tmp_path: Path) -> None:
    det = np.array(
        [
            [10.4, 20.6, 30.0, 40.0, 0.1234567, 5],
            [1, 2, 3, 4, 1.0, 6],
            [5, 5, 9, 9, 0.0, 1],
            [0, 0, 8, 8, 0.5, 3],
        ]
    )
    path = write_detections(tmp_path / "res", "00041000", det)
    assert path == tmp_path / "res" / "00041000.txt"
    assert path.read_text() == (
        "10,21,30,40,0.123457,copper\n1,2,3,4,1,pin-hole\n5,5,9,9,0,open\n0,0,8,8,0.5,mousebite\n"
    )
    back = read_detections(path)
    assert back.dtype == np.float64 and back.shape == (4, 6)
    expected = det.copy()
    expected[:, :4] = np.round(expected[:, :4])
    expected[:, 4] = np.round(expected[:, 4], 6)
    np.testing.assert_allclose(back, expected)
    assert [p.name for p in path.parent.iterdir()] == ["00041000.txt"]  # no temporary file left behind


def test_no_detections_give_an_empty_file(tmp_path: Path) -> None:
    path = write_detections(tmp_path, "a", np.zeros((0, 6)))
    assert path.read_text() == ""
    assert read_detections(path).shape == (0, 6)
    write_detections(tmp_path, "a", [[0, 0, 2, 2, 0.5, 2]])  # overwrites
    assert path.read_text() == "0,0,2,2,0.5,short\n"


@pytest.mark.parametrize(
    "det, words",
    [
        (np.zeros((2, 5)), "(N, 6)"),
        ([[0, 0, 5, 5, 1.5, 1]], "outside [0, 1]"),
        ([[0, 0, 5, 5, -0.1, 1]], "outside [0, 1]"),
        ([[0, 0, 5, 5, 0.5, 7]], "1..6"),
        ([[0, 0, 5, 5, 0.5, 2.5]], "1..6"),
        ([[5, 0, 5, 5, 0.5, 1]], "empty"),
        ([[0, 6, 5, 5, 0.5, 1]], "empty"),
        ([[1.2, 0, 1.4, 5, 0.5, 1]], "rounded"),
        ([[0, 0, np.nan, 5, 0.5, 1]], "non-finite"),
    ],
)
def test_write_rejects_bad_detections(tmp_path: Path, det: object, words: str) -> None:
    with pytest.raises(ValueError, match=re.escape(words)):
        write_detections(tmp_path, "x", det)
    assert not (tmp_path / "x.txt").exists()


@pytest.mark.parametrize("name", ["", "a/b", "..", "a\\b"])
def test_write_rejects_names_that_are_not_file_names(tmp_path: Path, name: str) -> None:
    with pytest.raises(ValueError, match="plain file name"):
        write_detections(tmp_path, name, np.zeros((0, 6)))


def test_read_tolerates_spaces_blank_lines_and_other_type_spellings(tmp_path: Path) -> None:
    f = tmp_path / "r.txt"
    f.write_text(
        "\n1 , 2, 3 ,4,0.5,open\n\n"
        "1,2,3,4,0.5,SHORT\r\n"
        "1,2,3,4,0.5,3\n"
        "1,2,3,4,0.5,spurious_copper\n"
        "1,2,3,4,0.5,pin_hole\n"
        "1 2 3 4 0.5 pin-hole\n"
        "1.5,2,3.5,4,0.25,spur\n  \n"
    )
    got = read_detections(f)
    assert got[:, 5].tolist() == [1, 2, 3, 5, 6, 6, 4]
    assert got[0].tolist() == [1, 2, 3, 4, 0.5, 1]
    assert got[-1].tolist() == [1.5, 2, 3.5, 4, 0.25, 4]


@pytest.mark.parametrize(
    "bad, words",
    [
        ("1,2,30,40,0.5", "is not 'x1,y1,x2,y2,confidence,type'"),
        ("1,,2,30,40,0.5,open", "is not"),
        ("1,2,30,40,0.5,open,extra", "is not"),
        ("a,2,30,40,0.5,open", "must be numbers"),
        ("1,2,30,40,nan,open", "non-finite"),
        ("1,2,30,40,1.5,open", "outside [0, 1]"),
        ("1,2,30,40,0.5,via", "unknown defect type 'via'"),
        ("1,2,30,40,0.5,7", "unknown defect type '7'"),
        ("30,2,30,40,0.5,open", "empty box"),
    ],
)
def test_bad_lines_name_their_number(tmp_path: Path, bad: str, words: str) -> None:
    f = tmp_path / "r.txt"
    f.write_text(f"1,2,30,40,0.5,open\n\n{bad}\n")
    with pytest.raises(DataError) as info:
        read_detections(f)
    assert info.value.path == f
    assert "line 3" in info.value.problem and words in info.value.problem


def test_missing_file_is_a_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        read_detections(tmp_path / "nope.txt")
