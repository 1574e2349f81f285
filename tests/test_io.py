"""Atomic writes and the append-only log reader."""

from __future__ import annotations

from pathlib import Path

import pytest

from pcbsiam.io import read_jsonl, write_json


def test_read_jsonl_skips_a_last_line_cut_by_a_kill(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "metrics.jsonl"
    assert read_jsonl(path) == []
    path.write_text('{"kind": "step", "loss": 1.0}\n\n{"kind": "step", "loss": 0.5}\n{"kind": "ep')
    assert read_jsonl(path) == [{"kind": "step", "loss": 1.0}, {"kind": "step", "loss": 0.5}]
    assert "cut short" in caplog.text


def test_read_jsonl_refuses_a_damaged_line_before_the_last(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"a": 1}\nnot json\n{"b": 2}\n')
    with pytest.raises(ValueError, match="line 2"):
        read_jsonl(path)


def test_run_folder_records_survive_a_cut_line(tmp_path: Path) -> None:
    from pcbsiam.train.fit import RunFolder

    run = RunFolder(tmp_path)
    run.log({"kind": "step", "global_step": 1})
    with open(run.metrics, "a") as fh:
        fh.write('{"kind": "step", "glo')  # a kill during the write
    assert run.records() == [{"kind": "step", "global_step": 1}]
    run.truncate_after(1, 0)  # a resume rewrites the log without the cut line
    assert run.metrics.read_text() == '{"kind": "step", "global_step": 1}\n'


def test_write_json_is_atomic(tmp_path: Path) -> None:
    write_json(tmp_path / "a.json", {"x": 1})
    assert (tmp_path / "a.json").read_text() == '{\n  "x": 1\n}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]
