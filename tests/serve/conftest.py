"""Shared pieces of the service tests: a tiny bundle, PNG bytes, free ports, waiting for a server."""

from __future__ import annotations

import io
import socket
import time
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
