"""The service on PostgreSQL: the API's record store, tables made by processes starting at once, and two
service processes sharing one database under load.

Each test gets a new database on a private server (the ``postgres`` fixture of ``conftest.py``); without
psycopg or PostgreSQL the tests are skipped with the reason.
"""

from __future__ import annotations

import io
import subprocess
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import numpy as np
import pytest

for _module in ("fastapi", "uvicorn", "multipart", "sqlalchemy", "psycopg"):
    pytest.importorskip(_module, reason="the serve extra is not installed: pip install -e '.[serve]'")

from fastapi.testclient import TestClient  # noqa: E402
from PIL import Image  # noqa: E402
from sqlalchemy import create_engine, text  # noqa: E402

from pcbsiam.errors import PcbsiamError  # noqa: E402
from pcbsiam.serve.app import create_app  # noqa: E402
from pcbsiam.serve.db import InspectionStore  # noqa: E402
from pcbsiam.serve.loadtest import run_loadtest  # noqa: E402
from tests.serve.conftest import (  # noqa: E402
    bad_board,
    free_port,
    good_board,
    png_bytes,
    post,
    start_serve,
    wait_healthy,
)

#: Load of the two-process test: clients per service x requests per client, for each of the two services.
CLIENTS, REQUESTS = 2, 5


def query(url: str, sql: str, **params: object) -> list[tuple]:
    """Rows of ``sql`` on the database at ``url``, through a connection of its own."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(text(sql), params)]
    finally:
        engine.dispose()


def test_api_records_and_reads_back_on_postgresql(serve_bundle: Path, postgres_url: str) -> None:
    app = create_app(serve_bundle, postgres_url, detector="classical")
    start = datetime.now(UTC) - timedelta(milliseconds=1)
    with TestClient(app, base_url="http://localhost") as client:
        res = post(client, png_bytes(bad_board()), template=png_bytes(good_board()))
        assert res.status_code == 201, res.text
        bad = res.json()
        assert bad["verdict"] == "defective" and len(bad["tiles"]) == bad["tile_count"] == 9
        assert bad["created_at"].endswith(("Z", "+00:00")) and len(bad["detections"]) >= 1
        assert client.get(f"/v1/inspections/{bad['id']}").json() == bad

        good = post(client, png_bytes(good_board()), board_name="demo").json()
        assert good["verdict"] == "pass" and good["board"] == "demo" and good["detections"] == []
        assert client.get(f"/v1/inspections/{good['id']}").json() == good
        overlay = client.get(bad["overlay_url"])
        assert overlay.status_code == 200 and overlay.content[:8] == b"\x89PNG\r\n\x1a\n"

        window = {"since": start.isoformat(), "until": (datetime.now(UTC) + timedelta(seconds=1)).isoformat()}
        listing = client.get("/v1/inspections", params=window).json()
        assert listing["total"] == 2 and [r["id"] for r in listing["items"]] == [good["id"], bad["id"]]
        defective = client.get("/v1/inspections", params={**window, "verdict": "defective"}).json()
        assert [r["id"] for r in defective["items"]] == [bad["id"]]
        later = {"since": (datetime.now(UTC) + timedelta(hours=1)).replace(tzinfo=None).isoformat()}
        assert client.get("/v1/inspections", params=later).json()["total"] == 0
        assert client.get("/v1/inspections/00000000-0000-0000-0000-000000000000").status_code == 404

    # what the tables hold, read with a connection of its own (the server's time zone is not UTC)
    types = dict(query(postgres_url, "SELECT column_name, data_type FROM information_schema.columns"))
    assert types["created_at"] == "timestamp with time zone" and types["tiles"] == "json"
    assert types["tested_png"] == "bytea"
    created, defective_flag, tiles, png = query(
        postgres_url, "SELECT created_at, defective, tiles, tested_png FROM inspections WHERE id = :id", id=bad["id"]
    )[0]
    assert created == datetime.fromisoformat(bad["created_at"].replace("Z", "+00:00"))
    assert defective_flag is True and tiles == bad["tiles"]
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(png))), bad_board())  # the tested image, lossless
    rows = query(
        postgres_url,
        "SELECT x1, y1, x2, y2, type, code, confidence FROM detections WHERE inspection_id = :id ORDER BY id",
        id=bad["id"],
    )
    assert rows == [(*d["box"], d["type"], d["code"], d["confidence"]) for d in bad["detections"]]


def test_a_file_name_with_a_nul_character_is_recorded(serve_bundle: Path, postgres_url: str) -> None:
    # PostgreSQL text holds no NUL; a client may send one in a multipart file name (httpx would escape it)
    head = b'--B\r\nContent-Disposition: form-data; name="tested"; filename="a\x00b.png"\r\n\r\n'
    tail = b'\r\n--B\r\nContent-Disposition: form-data; name="board"\r\n\r\ndemo\r\n--B--\r\n'
    with TestClient(create_app(serve_bundle, postgres_url), base_url="http://localhost") as client:
        res = client.post(
            "/v1/inspect",
            content=head + png_bytes(good_board()) + tail,
            headers={"content-type": "multipart/form-data; boundary=B"},
        )
        assert res.status_code == 201, res.text
        assert res.json()["tested_filename"] == "ab.png"


def test_a_restarted_database_server_costs_no_request(serve_bundle: Path, postgres, postgres_url: str) -> None:
    with TestClient(create_app(serve_bundle, postgres_url), base_url="http://localhost") as client:
        first = post(client, png_bytes(good_board()), board_name="demo")
        assert first.status_code == 201, first.text
        postgres.restart()  # the pooled connections are dead now
        second = post(client, png_bytes(good_board()), board_name="demo")
        assert second.status_code == 201, second.text
        assert client.get(f"/v1/inspections/{first.json()['id']}").status_code == 200


def test_stores_opened_at_once_create_the_tables_once(postgres_url: str) -> None:
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def open_store() -> None:
        barrier.wait()
        try:
            InspectionStore(postgres_url).close()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=open_store) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    tables = {r[0] for r in query(postgres_url, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
    assert tables == {"inspections", "detections"}


def test_an_unreachable_server_is_one_sentence() -> None:
    url = f"postgresql+psycopg://someone:secret@127.0.0.1:{free_port()}/nowhere"
    with pytest.raises(PcbsiamError) as info:
        InspectionStore(url)
    message = str(info.value)
    assert message.startswith("cannot open the inspection database") and "127.0.0.1" in message
    assert "secret" not in message and "\n" not in message


def start_service(bundle: Path, db_url: str, port: int, log: Path) -> subprocess.Popen:
    """``pcbsiam serve`` on ``port`` with the records at ``db_url`` (one torch thread, two inspection threads)."""
    return start_serve(bundle, db_url, port, log, "--threads", "1")


def test_two_services_share_one_database_under_load(serve_bundle: Path, postgres_url: str, tmp_path: Path) -> None:
    ports = [free_port(), free_port()]
    logs = [tmp_path / f"service{k}.log" for k in range(2)]
    # started together on an empty database (the table race itself: test_stores_opened_at_once_...)
    procs = [start_service(serve_bundle, postgres_url, port, log) for port, log in zip(ports, logs, strict=True)]
    urls = [f"http://127.0.0.1:{port}" for port in ports]
    try:
        for url, proc in zip(urls, procs, strict=True):
            wait_healthy(url, 90, proc)
        tested = tmp_path / "tested.png"
        tested.write_bytes(png_bytes(bad_board()))
        reports: dict[str, object] = {}

        def load(url: str) -> None:
            reports[url] = run_loadtest(
                url, tested, board="demo", clients=CLIENTS, requests=REQUESTS, timeout=60, max_seconds=60
            )

        threads = [threading.Thread(target=load, args=(url,)) for url in urls]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert set(reports) == set(urls), "a load test did not finish"
        answered = [i for url in urls for i in reports[url].ids]  # type: ignore[attr-defined]
        for url in urls:
            report = reports[url]
            assert report.errors == 0 and report.ok == CLIENTS * REQUESTS, report.summary()  # type: ignore[attr-defined]
        assert len(answered) == len(set(answered)) == 2 * CLIENTS * REQUESTS

        # every answered inspection is in the shared database exactly once, and nothing else is
        rows = query(postgres_url, "SELECT id, verdict, tile_count FROM inspections")
        assert sorted(r[0] for r in rows) == sorted(answered)
        assert all(verdict == "defective" and count == 9 for _, verdict, count in rows)
        # and each service reads what the other wrote
        with httpx.Client(timeout=30) as http:
            for k, url in enumerate(urls):
                other = reports[urls[1 - k]].ids  # type: ignore[attr-defined]
                assert http.get(f"{url}/v1/inspections/{other[0]}").json()["id"] == other[0]
                assert http.get(f"{url}/v1/inspections", params={"limit": 1}).json()["total"] == len(answered)
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
    for log in logs:
        assert "Traceback" not in log.read_text(errors="replace"), log.read_text(errors="replace")[-3000:]
