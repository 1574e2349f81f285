"""Atomic writes and the append-only log reader."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pcbsiam.io import STALE_TMP_SECONDS, atomic_path, read_jsonl, write_json


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


def test_a_write_removes_old_temporaries_of_its_target_only(tmp_path: Path) -> None:
    old = time.time() - STALE_TMP_SECONDS - 60
    stale = tmp_path / ".m.bundle.ab_cd123.tmp.bundle"  # a save killed an hour ago
    live = tmp_path / ".m.bundle.zz9yy8xx.tmp.bundle"  # another writer of m.bundle, busy now
    other = tmp_path / ".n.bundle.ab_cd123.tmp.bundle"  # another target's
    mine = tmp_path / ".m.bundle.notours.tmp.bundle.keep"  # not a temporary name atomic_path makes
    for p in (stale, live, other, mine):
        p.write_bytes(b"partial")
    for p in (stale, other, mine):
        os.utime(p, (old, old))
    with atomic_path(tmp_path / "m.bundle") as tmp:
        tmp.write_bytes(b"whole")
    assert (tmp_path / "m.bundle").read_bytes() == b"whole"
    assert not stale.exists() and live.exists() and other.exists() and mine.exists()


def test_the_leftover_of_a_write_killed_by_sigkill_is_removed_by_a_later_write(tmp_path: Path) -> None:
    code = (
        "import sys, time\n"
        "from pcbsiam.io import atomic_path\n"
        "with atomic_path(sys.argv[1]) as tmp:\n"
        "    tmp.write_bytes(b'half a bundle')\n"
        "    print('writing', flush=True)\n"
        "    time.sleep(60)\n"
    )
    target = tmp_path / "model.bundle"
    proc = subprocess.Popen([sys.executable, "-c", code, str(target)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "writing"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    (left,) = tmp_path.glob(".model.bundle.*.tmp.bundle")
    assert not target.exists()
    with atomic_path(target) as tmp:  # a fresh leftover may be a live writer's: kept
        tmp.write_bytes(b"v1")
    assert left.exists()
    old = time.time() - STALE_TMP_SECONDS - 1
    os.utime(left, (old, old))
    with atomic_path(target) as tmp:
        tmp.write_bytes(b"v2")
    assert target.read_bytes() == b"v2" and [p.name for p in tmp_path.iterdir()] == ["model.bundle"]
