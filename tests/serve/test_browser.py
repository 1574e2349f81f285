"""The review page end to end in headless Chromium (Debian's ``chromium``, driven by Playwright for Python).

Needs ``/usr/bin/chromium`` and the ``playwright`` package; the fixture installs what is missing
(``apt-get install chromium`` as root, ``pip install playwright``) unless ``PCBSIAM_NO_INSTALL=1``,
and skips with the reason when it cannot. ``playwright install`` is never run: the system Chromium is used.
"""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tests.serve.conftest import bad_board, free_port, good_board, png_bytes, wait_healthy

for _module in ("fastapi", "uvicorn", "multipart", "sqlalchemy"):
    pytest.importorskip(_module, reason="the serve extra is not installed: pip install -e '.[serve]'")

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
TOKEN = "browser-token"
#: The README's picture, written when missing (or always with PCBSIAM_UPDATE_SCREENSHOT=1).
README_SHOT = Path(__file__).resolve().parents[2] / "docs" / "img" / "review_page.png"


def _run(cmd: list[str], timeout: float) -> bool:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        return subprocess.run(cmd, capture_output=True, timeout=timeout, env=env).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.fixture(scope="module")
def sync_playwright():
    """Playwright's ``sync_playwright``, with /usr/bin/chromium present; installs or skips."""
    may_install = os.environ.get("PCBSIAM_NO_INSTALL", "") != "1"
    if not CHROMIUM.exists():
        if not (may_install and shutil.which("apt-get") and os.geteuid() == 0):
            pytest.skip(
                f"{CHROMIUM} is absent and cannot be installed here (needs root and apt-get): "
                "run `apt-get install -y chromium`"
            )
        if not _run(["apt-get", "install", "-y", "-q", "chromium"], 600):
            _run(["apt-get", "update", "-q"], 300)
            _run(["apt-get", "install", "-y", "-q", "chromium"], 600)
        if not CHROMIUM.exists():
            pytest.skip(f"{CHROMIUM} is absent and `apt-get install -y chromium` failed (offline?)")
    try:
        module = importlib.import_module("playwright.sync_api")
    except ImportError:
        if not may_install or not _run([sys.executable, "-m", "pip", "install", "-q", "playwright"], 600):
            pytest.skip("the playwright package is absent and `pip install playwright` failed")
        importlib.invalidate_caches()
        module = importlib.import_module("playwright.sync_api")
    return module.sync_playwright


@pytest.fixture(scope="module")
def server(serve_bundle: Path, tmp_path_factory: pytest.TempPathFactory):
    """The service on 127.0.0.1 in a thread of this process, with a token; yields its URL."""
    import uvicorn

    from pcbsiam.serve.app import create_app

    db = tmp_path_factory.mktemp("browser") / "inspections.db"
    app = create_app(serve_bundle, f"sqlite:///{db}", token=TOKEN)
    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, 30)
        yield url
    finally:
        srv.should_exit = True
        thread.join(15)


def test_review_page_inspects_and_lists(sync_playwright, server: str, tmp_path: Path) -> None:
    good, bad = tmp_path / "good.png", tmp_path / "bad.png"
    good.write_bytes(png_bytes(good_board()))
    bad.write_bytes(png_bytes(bad_board()))
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.set_default_timeout(30_000)
            page.goto(server + "/")
            page.wait_for_function("document.getElementById('error').textContent.includes('bearer token')")

            page.fill("#token", TOKEN)
            page.dispatch_event("#token", "change")
            page.wait_for_selector("#board option[value=demo]", state="attached")
            assert page.text_content("#error") == ""

            # tested + registered board: the good board
            page.check("input[name=refkind][value=board]")
            page.select_option("#board", "demo")
            page.set_input_files("#tested", str(good))
            page.click("#inspect")
            page.wait_for_function("document.getElementById('overlay').dataset.loaded")
            assert page.text_content("#verdict") == "PASS"
            first_id = page.text_content("#inspection-id")
            assert page.text_content("#max-score") == "0.0000"
            assert page.text_content("#score-name") == "max L2 distance"  # the model names its score

            # tested + template file: the defective board
            page.check("input[name=refkind][value=template]")
            page.set_input_files("#tested", str(bad))
            page.set_input_files("#template", str(good))
            page.click("#inspect")
            page.wait_for_function(f"(d => d && d !== {first_id!r})(document.getElementById('overlay').dataset.loaded)")
            assert page.text_content("#verdict") == "DEFECTIVE"
            assert float(page.text_content("#max-score")) > float(page.text_content("#threshold"))
            page.wait_for_function("document.querySelectorAll('#history tr').length >= 2")
            assert page.text_content("#history tr:first-child td:nth-child(2)") == "defective"
            assert page.text_content("#history tr:nth-child(2) td:nth-child(2)") == "pass"
            assert page.text_content("#error") == ""

            shot = tmp_path / "review_page.png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 10_000
            if not README_SHOT.exists() or os.environ.get("PCBSIAM_UPDATE_SCREENSHOT") == "1":
                README_SHOT.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(shot, README_SHOT)
        finally:
            browser.close()


def test_api_page_renders_offline(sync_playwright, server: str) -> None:
    """``/docs`` draws the API from the service's own copy of Swagger UI: no request leaves the service."""
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page()
            page.set_default_timeout(30_000)
            elsewhere: list[str] = []
            page.on("request", lambda req: None if req.url.startswith(server) else elsewhere.append(req.url))
            page.goto(server + "/docs")
            page.wait_for_selector(".swagger-ui .info .title")
            assert "pcbsiam inspection service" in page.text_content(".swagger-ui .info .title")
            page.wait_for_selector("[data-path='/v1/inspect']")  # the operations are listed
            assert elsewhere == []
        finally:
            browser.close()
