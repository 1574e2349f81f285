"""Atomic file writing (a crash never leaves a half-written file behind) and reading of append-only logs."""

from __future__ import annotations

import contextlib
import glob
import json
import logging
import os
import re
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

log = logging.getLogger(__name__)

_UMASK = os.umask(0)
os.umask(_UMASK)


#: A temporary file of :func:`atomic_path` untouched for this long is a leftover of a killed writer.
STALE_TMP_SECONDS = 3600.0


def _remove_stale_temporaries(path: Path, max_age: float = STALE_TMP_SECONDS) -> None:
    """Delete ``.{name}.XXXXXXXX.tmp{suffix}`` files beside ``path`` not modified for ``max_age`` s.

    A writer killed (``kill -9``, power loss) between creating its temporary file and renaming it
    leaves the file behind. Only old ones are removed, because another process may be writing the
    same target right now (two saves of one bundle, the service and a command): a live writer keeps
    touching its file, and no pcbsiam write of one file takes an hour.
    """
    pattern = re.compile(rf"\.{re.escape(path.name)}\.[a-z0-9_]{{8}}\.tmp{re.escape(path.suffix)}")
    cutoff = time.time() - max_age
    for cand in path.parent.glob(f".{glob.escape(path.name)}.*.tmp{glob.escape(path.suffix)}"):
        try:
            if pattern.fullmatch(cand.name) and cand.stat().st_mtime < cutoff:
                cand.unlink()
                log.info("removed %s, left by an interrupted write of %s", cand, path.name)
        except OSError:  # gone already, or not ours to remove: never a reason to fail a write
            continue


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds.

    The temporary file keeps ``path``'s suffix so that writers choosing a format by extension
    (matplotlib, Pillow, torch) behave the same. Temporary files of earlier writes of ``path`` that
    were killed before their rename, and untouched for :data:`STALE_TMP_SECONDS`, are removed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=f".tmp{path.suffix}")
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the file the permissions open() would
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def atomic_write(path: str | Path, writer: Callable[[IO[Any]], None], mode: str = "w") -> None:
    """Open a temporary file in ``mode``, let ``writer`` fill it, then rename it onto ``path``."""
    with atomic_path(path) as tmp, open(tmp, mode) as fh:
        writer(fh)


def write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    atomic_write(path, lambda fh: fh.write(text))


def write_json(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def append_jsonl(path: str | Path, record: dict[str, Any]) -> None:
    """Append one record to a JSON-lines log, flushed at once (a kill cuts at most this line)."""
    with open(path, "a") as fh:
        fh.write(json.dumps(record) + "\n")


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """The records of a JSON-lines log, one per line; [] when the file does not exist.

    An append-only log of a killed process may end in a cut line: a last line that does not parse is
    skipped with a warning. A bad line before the last one means the file is damaged: ValueError.
    """
    path = Path(path)
    if not path.is_file():
        return []
    lines = [(n, line) for n, line in enumerate(path.read_text().splitlines(), 1) if line.strip()]
    out: list[dict[str, Any]] = []
    for k, (n, line) in enumerate(lines):
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError as exc:
            if k == len(lines) - 1:
                log.warning("%s: skipped its last line %d, cut short by an interrupted write", path, n)
                break
            raise ValueError(f"{path} line {n} is not JSON ({exc.msg}); the log is damaged") from exc
    return out
