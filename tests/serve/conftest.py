"""Shared pieces of the service tests: a tiny bundle, PNG bytes, posting, one-sentence errors, free ports,
waiting for a server."""

from __future__ import annotations

import io
import logging
import os
import socket
import struct
import subprocess
import sys
import time
import uuid
import zlib
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.conftest import board, make_tiny_bundle

#: Threshold of the service tests' bundle: identical tiles (distance 0) pass, a 16 px inverted square fails.
THRESHOLD = 0.1


def png_bytes(image: np.ndarray) -> bytes:
    """PNG file bytes of a uint8 image."""
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def good_board() -> np.ndarray:
    """The registered ``demo`` board itself: passes."""
    return board(1, 192)


def bad_board() -> np.ndarray:
    """The ``demo`` board with a 16 px square inverted: defective at :data:`THRESHOLD`."""
    img = board(1, 192).copy()
    img[70:86, 70:86] = 255 - img[70:86, 70:86]
    return img


def png_header_only(width: int, height: int) -> bytes:
    """A PNG signature and IHDR announcing ``width`` x ``height`` 8-bit grey pixels, and no data."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    chunk = struct.pack(">I", len(ihdr)) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return b"\x89PNG\r\n\x1a\n" + chunk + struct.pack(">I", 0) + b"IEND" + struct.pack(">I", zlib.crc32(b"IEND"))


def post(client, tested: bytes, template: bytes | None = None, board_name: str | None = None, **kwargs):
    """``POST /v1/inspect`` of PNG bytes with a template file or a registered board name."""
    files = {"tested": ("tested.png", tested, "image/png")}
    if template is not None:
        files["template"] = ("template.png", template, "image/png")
    return client.post("/v1/inspect", files=files, data={"board": board_name} if board_name else {}, **kwargs)


def is_sentence(detail: object) -> bool:
    """An error's ``detail``: one line of text, neither empty nor a dump."""
    return isinstance(detail, str) and 10 < len(detail) <= 600 and "\n" not in detail and "Traceback" not in detail


def assert_sentence(res: httpx.Response, status: int, *words: str) -> str:
    """Assert ``res`` has ``status`` and a one-sentence ``detail`` containing ``words``; return the detail."""
    assert res.status_code == status, res.text
    detail = res.json()["detail"]
    assert is_sentence(detail), detail
    for w in words:
        assert w in detail, detail
    return detail


@pytest.fixture
def no_tracebacks(caplog: pytest.LogCaptureFixture):
    """Fail a test whose server side logged a traceback."""
    caplog.set_level(logging.WARNING)
    yield caplog
    dumped = [r.getMessage() for r in caplog.records if r.exc_info or "Traceback" in r.getMessage()]
    assert not dumped, dumped


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url: str, timeout: float = 60.0, proc=None) -> None:
    """Poll ``url``/healthz until it answers 200; fail after ``timeout`` s or if ``proc`` exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"the server exited with code {proc.returncode} before it was ready")
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    pytest.fail(f"{url} was not healthy within {timeout} s")


@pytest.fixture(scope="session")
def serve_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny calibrated bundle (threshold :data:`THRESHOLD`) with the 192 px board ``demo``."""
    path = tmp_path_factory.mktemp("serve") / "tiny.bundle"
    return make_tiny_bundle(path, threshold=THRESHOLD, boards={"demo": board(1, 192)})


@pytest.fixture(scope="session")
def postgres():
    """A private PostgreSQL server for the session (see ``tests/serve/postgres.py``), stopped at the end.

    Skipped, with the reason, where psycopg is not installed or PostgreSQL is missing or cannot start.
    """
    pytest.importorskip("psycopg", reason="psycopg is not installed: pip install -e '.[serve]'")
    from tests.serve.postgres import Unavailable, private_postgres

    try:
        with private_postgres() as server:
            yield server
    except Unavailable as exc:
        pytest.skip(f"no PostgreSQL server for the tests: {exc}")


@pytest.fixture
def postgres_url(postgres, request: pytest.FixtureRequest) -> str:
    """The SQLAlchemy URL of a new empty database on the session's PostgreSQL server, one per test."""
    name = "t_" + "".join(c if c.isalnum() else "_" for c in request.node.name.lower())[:50]
    return postgres.create_database(f"{name}_{uuid.uuid4().hex[:8]}")


def start_serve(bundle: Path, db_url: str, port: int, log: Path, *extra: str) -> subprocess.Popen:
    """A ``pcbsiam serve`` process on ``port`` with the records at ``db_url`` (two inspection threads, warnings
    only, no token), its output appended to ``log``; ``extra`` options are added."""
    cmd = [sys.executable, "-m", "pcbsiam.cli.serve", "serve", "--model", str(bundle), "--db", db_url]
    cmd += ["--port", str(port), "--log-level", "warning", "--workers-threads", "2", *extra]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PCBSIAM_TOKEN": ""}
    with open(log, "ab") as fh:
        return subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env)
