"""What probing found: out-of-range queries, other hosts and sites, the docs offline, a database that
cannot be written, and the time and size an inspection may take. Every refusal is an exact status
with a one-sentence ``detail``, and nothing logs a traceback."""

from __future__ import annotations

import asyncio
import errno
import sqlite3
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

for _module in ("fastapi", "multipart", "sqlalchemy"):
    pytest.importorskip(_module, reason="the serve extra is not installed: pip install -e '.[serve]'")

from fastapi.testclient import TestClient  # noqa: E402
from sqlalchemy import create_engine  # noqa: E402
from sqlalchemy.exc import OperationalError  # noqa: E402

from pcbsiam.errors import PcbsiamError  # noqa: E402
from pcbsiam.serve.app import MAX_OFFSET, create_app  # noqa: E402
from pcbsiam.serve.db import unavailable_as  # noqa: E402
from pcbsiam.serve.middleware import same_site, split_host  # noqa: E402
from pcbsiam.serve.service import ServiceSettings, Ticket, allowed_hosts_for  # noqa: E402
from tests.serve.conftest import (  # noqa: E402
    assert_sentence,
    bad_board,
    good_board,
    is_sentence,
    png_bytes,
    png_header_only,
    post,
)

LOCAL = "http://localhost:8000"


@pytest.fixture(scope="module")
def client(serve_bundle: Path, tmp_path_factory: pytest.TempPathFactory):
    app = create_app(serve_bundle, f"sqlite:///{tmp_path_factory.mktemp('hard') / 'h.db'}")
    with TestClient(app, base_url=LOCAL) as c:
        yield c


def total(client: TestClient) -> int:
    return client.get("/v1/inspections").json()["total"]


# ---------------------------------------------------------------- 1. query parameters within range


@pytest.mark.parametrize(
    "query, words",
    [
        ("offset=9223372036854775808", ["query parameter 'offset'", str(MAX_OFFSET)]),
        ("offset=123456789012345678901234567890", ["query parameter 'offset'"]),
        ("limit=18446744073709551616", ["query parameter 'limit'", "200"]),
        ("limit=-9223372036854775809", ["query parameter 'limit'"]),
        ("since=9999-12-31T23:00:00-14:00", ["query parameter 'since'", "UTC"]),
        ("since=0001-01-01T00:00:00%2B14:00", ["query parameter 'since'", "UTC"]),
        ("until=9999-12-31T23:00:00-14:00", ["query parameter 'until'", "UTC"]),
        ("until=0001-01-01T00:00:00%2B00:01", ["query parameter 'until'", "UTC"]),
        ("since=99999999999999999999", ["query parameter 'since'"]),
        ("since=2024-01-01T00:00:00%2B25:00", ["query parameter 'since'"]),
        ("limit=x&offset=y&verdict=z&since=a&until=b", ["'limit'", "'offset'", "'verdict'", "'since'", "'until'"]),
    ],
)
def test_listing_out_of_range_is_422(client: TestClient, no_tracebacks, query: str, words: list[str]) -> None:
    assert_sentence(client.get(f"/v1/inspections?{query}"), 422, *words)


@pytest.mark.parametrize(
    "query",
    [
        f"offset={MAX_OFFSET}",
        "limit=1&offset=0",
        "limit=200",
        "since=9999-12-31T23:59:59.999999",  # naive: UTC
        "since=9999-12-31T09:59:59%2B14:00",
        "until=0001-01-01T00:00:00",
        "since=0001-01-01T00:00:00-14:00",
        "since=0001-01-01T00:00:00&until=9999-12-31T23:59:59Z",
        "since=2030-01-01&until=2020-01-01",  # an empty window is not an error
    ],
)
def test_listing_extremes_in_range_answer(client: TestClient, no_tracebacks, query: str) -> None:
    res = client.get(f"/v1/inspections?{query}")
    assert res.status_code == 200, res.text
    assert res.json()["next_offset"] is None


def test_validation_errors_are_one_sentence(client: TestClient) -> None:
    detail = assert_sentence(client.get("/v1/inspections?since=" + "9" * 5000), 422, "query parameter 'since'")
    assert len(detail) < 300
    detail = assert_sentence(client.get("/v1/inspections/" + "x" * 5000), 404, "no inspection")
    assert len(detail) < 200


# ---------------------------------------------------------------- 2. hosts and cross-site writes


@pytest.mark.parametrize("host", ["evil.example", "evil.example:8000", "192.168.1.10:8000", "localhost.evil.example"])
def test_other_hosts_get_400(client: TestClient, host: str) -> None:
    h = {"host": host}
    for res in (
        client.get("/healthz", headers=h),
        client.get("/v1/inspections", headers=h),
        post(client, png_bytes(good_board()), board_name="demo", headers=h),
    ):
        assert_sentence(res, 400, "does not answer for the host", "allowed hosts")


@pytest.mark.parametrize("host", ["", "a b", "localhost:abc", "localhost:99999", "user@localhost", "localhost/x"])
def test_malformed_host_gets_400(client: TestClient, host: str) -> None:
    assert_sentence(client.get("/healthz", headers={"host": host}), 400, "Host")


@pytest.mark.parametrize("host", ["localhost:8000", "127.0.0.1:8000", "[::1]:8000", "LOCALHOST.", "127.0.0.1"])
def test_loopback_hosts_are_served(client: TestClient, host: str) -> None:
    assert client.get("/healthz", headers={"host": host}).status_code == 200
    assert client.get("/", headers={"host": host}).status_code == 200


def test_configured_and_any_hosts(serve_bundle: Path, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'hosts.db'}"
    app = create_app(serve_bundle, url, allowed_hosts=("Inspect.Line3",))
    with TestClient(app, base_url="http://inspect.line3:8000") as c:
        assert c.get("/healthz").status_code == 200
        assert_sentence(c.get("/healthz", headers={"host": "localhost"}), 400)
    app = create_app(serve_bundle, url, allowed_hosts=("*",))
    with TestClient(app, base_url="http://whatever.example") as c:
        assert c.get("/healthz").status_code == 200


@pytest.mark.parametrize(
    "headers, words",
    [
        ({"origin": "http://evil.example"}, ["POST", "Origin", "evil.example"]),
        ({"origin": "http://localhost:3000"}, ["Origin"]),  # another port is another site
        ({"origin": "null"}, ["Origin"]),  # sandboxed frames and some redirects
        ({"origin": "https://evil.example", "referer": f"{LOCAL}/"}, ["Origin"]),  # Origin decides
        ({"referer": "http://evil.example/form.html"}, ["Referer", "evil.example"]),
        ({"referer": "not a url"}, ["Referer"]),
    ],
)
def test_cross_site_writes_get_403_and_record_nothing(client: TestClient, headers: dict, words: list[str]) -> None:
    before = total(client)
    res = post(client, png_bytes(good_board()), board_name="demo", headers=headers)
    assert_sentence(res, 403, "another site", *words)
    # what a cross-site HTML form sends
    res = client.post("/v1/inspect", data={"board": "demo"}, headers=headers)
    assert_sentence(res, 403, "another site")
    assert_sentence(client.put("/v1/boards", headers=headers), 403)
    assert total(client) == before


@pytest.mark.parametrize(
    "headers",
    [
        {},  # curl, scripts
        {"origin": LOCAL},  # the review page
        {"origin": "http://localhost:8000", "referer": "http://localhost:8000/"},
        {"referer": f"{LOCAL}/docs"},
    ],
)
def test_same_site_and_non_browser_writes_pass(client: TestClient, headers: dict) -> None:
    assert post(client, png_bytes(bad_board()), board_name="demo", headers=headers).status_code == 201


def test_cross_site_reads_are_answered_without_cors(client: TestClient) -> None:
    res = client.get("/v1/inspections", headers={"origin": "http://evil.example"})
    assert res.status_code == 200 and "access-control-allow-origin" not in res.headers


def test_origin_is_checked_before_the_token(serve_bundle: Path, tmp_path: Path) -> None:
    app = create_app(serve_bundle, f"sqlite:///{tmp_path / 'tok.db'}", token="t")
    with TestClient(app, base_url=LOCAL) as c:
        assert_sentence(c.post("/v1/inspect", headers={"origin": "http://evil.example"}), 403)
        assert_sentence(c.post("/v1/inspect"), 401)


def test_host_helpers() -> None:
    assert split_host("LocalHost.:8000") == ("localhost", 8000)
    assert split_host("[::1]:80") == ("::1", 80)
    assert split_host("example.com") == ("example.com", None)
    assert split_host("") is None and split_host("a:b") is None
    assert same_site("https://example.com", ("example.com", None))  # behind a TLS proxy
    assert same_site("http://example.com:80/page?q", ("example.com", 443))
    assert not same_site("http://example.com:8001", ("example.com", 8000))
    assert not same_site("ftp://example.com", ("example.com", None))
    assert not same_site("http://[bad", ("example.com", None))
    assert allowed_hosts_for("0.0.0.0", ["Line3.Local."]) == ("localhost", "127.0.0.1", "::1", "line3.local")
    assert allowed_hosts_for("10.0.0.5") == ("localhost", "127.0.0.1", "::1", "10.0.0.5")
    assert ServiceSettings(allowed_hosts=("[::1]", "A.b.")).allowed_hosts == ("::1", "a.b")
    with pytest.raises(PcbsiamError, match="allowed_hosts"):
        ServiceSettings(allowed_hosts="localhost")  # a string is not a list of names
    with pytest.raises(PcbsiamError, match="allowed_hosts"):
        ServiceSettings(allowed_hosts=(" ",))
    with pytest.raises(PcbsiamError, match="inspection_timeout_s"):
        ServiceSettings(inspection_timeout_s=0)


# ---------------------------------------------------------------- 3. the API page offline


def test_docs_are_served_without_a_cdn(client: TestClient) -> None:
    for page in ("/docs", "/redoc"):
        res = client.get(page)
        assert res.status_code == 200 and "text/html" in res.headers["content-type"]
        assert "http://" not in res.text and "https://" not in res.text, page
        scripts = [part.split('"')[0] for part in res.text.split('src="')[1:]]
        assert scripts, page
        for src in scripts:
            js = client.get(src)
            assert js.status_code == 200 and len(js.content) > 100_000, src
    assert client.get("/openapi.json").json()["openapi"].startswith("3.")


def test_docs_page_without_the_offline_package(serve_bundle: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "fastapi_offline", None)  # import fails
    app = create_app(serve_bundle, f"sqlite:///{tmp_path / 'docs.db'}")
    with TestClient(app, base_url=LOCAL) as c:
        res = c.get("/docs")
        assert res.status_code == 200 and "/openapi.json" in res.text and "<script" not in res.text
        assert c.get("/redoc").status_code == 404


# ---------------------------------------------------------------- 4. a database that cannot be written


@pytest.fixture
def own(serve_bundle: Path, tmp_path: Path):
    """A service of its own (its database gets broken), with its database file."""
    db = tmp_path / "own.db"
    app = create_app(serve_bundle, f"sqlite:///{db}")
    with TestClient(app, base_url=LOCAL) as c:
        yield c, db


def read_only(db: Path):
    return create_engine(f"sqlite:///file:{db}?mode=ro&uri=true", connect_args={"check_same_thread": False})


def test_health_and_inspect_on_a_read_only_database(own, no_tracebacks) -> None:
    client, db = own
    assert client.get("/healthz").json()["status"] == "ok"
    assert post(client, png_bytes(good_board()), board_name="demo").status_code == 201
    store = client.app.state.service.store
    store.db = read_only(db)  # what a read-only file, folder or mount gives (root ignores chmod)
    res = client.get("/healthz")
    detail = assert_sentence(res, 503, "cannot be written", "readonly")
    body = res.json()
    assert body["status"] == "unavailable" and body["model_id"] and body["capacity"] >= 1 and res.headers["retry-after"]
    res = post(client, png_bytes(bad_board()), board_name="demo")
    assert_sentence(res, 503, "not recorded", "cannot be written")
    assert client.get("/v1/inspections").json()["total"] == 1  # reading still works
    with sqlite3.connect(db) as con:
        assert con.execute("SELECT COUNT(*) FROM inspections").fetchone()[0] == 1
    assert detail


@pytest.mark.parametrize(
    "error, words",
    [
        (OperationalError("INSERT", {}, sqlite3.OperationalError("disk I/O error")), ["disk I/O error"]),
        (OperationalError("INSERT", {}, sqlite3.OperationalError("database or disk is full")), ["disk is full"]),
        (OSError(errno.ENOSPC, "No space left on device"), ["No space left"]),
    ],
)
def test_inspection_on_a_failing_disk_is_503(own, no_tracebacks, monkeypatch, error: Exception, words) -> None:
    client, _ = own
    store = client.app.state.service.store

    def add(_row: dict) -> None:
        with unavailable_as("the inspection database cannot be written"):
            raise error

    monkeypatch.setattr(store, "add", add)
    res = post(client, png_bytes(good_board()), board_name="demo")
    assert_sentence(res, 503, "not recorded", *words)
    assert "INSERT" not in res.json()["detail"]  # no SQL in the sentence
    assert client.get("/v1/inspections").json()["total"] == 0


def test_health_on_a_full_disk(own, monkeypatch) -> None:
    client, _ = own
    import pcbsiam.serve.db as db_module

    monkeypatch.setattr(db_module.shutil, "disk_usage", lambda _p: type("U", (), {"free": 2**20})())
    assert_sentence(client.get("/healthz"), 503, "1.0 MiB free")


def test_unreachable_database_is_503_for_reads(own, no_tracebacks, tmp_path: Path) -> None:
    client, _ = own
    store = client.app.state.service.store
    store.db = read_only(tmp_path / "gone" / "nothing.db")  # cannot even be opened
    assert_sentence(client.get("/v1/inspections"), 503, "cannot be read")
    assert_sentence(client.get("/v1/inspections/x"), 503, "cannot be read")
    assert_sentence(client.get("/v1/inspections/x/overlay.png"), 503, "cannot be read")
    assert client.get("/healthz").json()["status"] == "unavailable"


# ---------------------------------------------------------------- 5. bounded cost


def test_default_pixel_limit(client: TestClient) -> None:
    limit = ServiceSettings().max_pixels
    assert limit == 2048 * 2048
    res = post(client, png_header_only(4480, 4480), board_name="demo")
    assert_sentence(res, 413, "4480x4480", str(limit))
    assert_sentence(post(client, png_header_only(2049, 2048), board_name="demo"), 413, "2049x2048")
    assert_sentence(post(client, png_header_only(2048, 2048), board_name="demo"), 422, "truncated")  # within


class Slow:
    """Makes the service's inspections wait for ``release`` (and counts how many started)."""

    def __init__(self, service, monkeypatch) -> None:
        self.release = threading.Event()
        self.started = 0
        real = service._inspector

        def inspector():
            inner = real()

            class Waiting:
                def inspect(_self, *args):
                    self.started += 1
                    self.release.wait(20)
                    return inner.inspect(*args)

            return Waiting()

        monkeypatch.setattr(service, "_inspector", inspector)


def wait_until(cond, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_inspection_past_its_time_is_503_and_not_recorded(
    serve_bundle: Path, tmp_path: Path, monkeypatch, no_tracebacks
) -> None:
    app = create_app(
        serve_bundle, f"sqlite:///{tmp_path / 'slow.db'}", inspection_timeout_s=0.5, max_concurrency=1, max_queue=2
    )
    service = app.state.service
    slow = Slow(service, monkeypatch)
    files = {"tested": ("t.png", png_bytes(good_board()))}

    async def scenario() -> list[httpx.Response]:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=LOCAL) as ac:
            calls = [ac.post("/v1/inspect", files=files, data={"board": "demo"}) for _ in range(2)]
            return await asyncio.gather(*calls)

    try:
        t0 = time.monotonic()
        first, second = asyncio.run(scenario())
        assert time.monotonic() - t0 < 5
        for res in (first, second):
            assert_sentence(res, 503, "0.5 s limit", "nothing was recorded")
            assert res.headers["retry-after"]
        # the running job keeps its slot until it really ends; the queued one was dropped
        assert service.pending == 1 and slow.started == 1
        slow.release.set()
        wait_until(lambda: service.pending == 0)
        assert slow.started == 1
        assert service.store.page()[1] == 0  # the abandoned inspection was not recorded
        # the slots are free again: a quick inspection answers
        monkeypatch.undo()
        with TestClient(app, base_url=LOCAL) as c:
            assert post(c, png_bytes(good_board()), board_name="demo").status_code == 201
    finally:
        slow.release.set()
        service.close()


def test_inspection_committing_at_its_deadline_is_answered(
    serve_bundle: Path, tmp_path: Path, monkeypatch, no_tracebacks
) -> None:
    app = create_app(serve_bundle, f"sqlite:///{tmp_path / 'commit.db'}", inspection_timeout_s=0.3)
    store = app.state.service.store
    real = store.add
    monkeypatch.setattr(store, "add", lambda row: (time.sleep(0.6), real(row)))
    with TestClient(app, base_url=LOCAL) as c:
        res = post(c, png_bytes(good_board()), board_name="demo")
        assert res.status_code == 201, res.text  # it was committing when the time ran out: told, and recorded
        assert c.get(f"/v1/inspections/{res.json()['id']}").status_code == 200


def test_ticket() -> None:
    ticket = Ticket()
    assert ticket.commit() and not ticket.abandon()  # committing: too late to abandon
    ticket = Ticket()
    assert ticket.abandon() and not ticket.commit()  # abandoned: may not commit
    assert is_sentence("the request did not finish in time")
