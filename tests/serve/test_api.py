"""The HTTP API in-process: happy paths, the record store, listing, and every kind of bad input."""

from __future__ import annotations

import asyncio
import io
import sqlite3
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

for _module in ("fastapi", "multipart", "sqlalchemy"):
    pytest.importorskip(_module, reason="the serve extra is not installed: pip install -e '.[serve]'")

from fastapi.testclient import TestClient  # noqa: E402

from pcbsiam.serve.app import create_app  # noqa: E402
from pcbsiam.serve.middleware import Guard  # noqa: E402
from pcbsiam.serve.service import ServiceSettings  # noqa: E402
from tests.conftest import board  # noqa: E402
from tests.serve.conftest import (  # noqa: E402
    assert_sentence,
    bad_board,
    good_board,
    png_bytes,
    png_header_only,
    post,
)

MAX_UPLOAD = 512 * 1024


@pytest.fixture(scope="module")
def db_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("api") / "inspections.db"


@pytest.fixture(scope="module")
def client(serve_bundle: Path, db_path: Path):
    app = create_app(serve_bundle, f"sqlite:///{db_path}", max_upload_bytes=MAX_UPLOAD)
    with TestClient(app, base_url="http://localhost") as c:
        yield c


# ---------------------------------------------------------------- happy paths and the record store


def test_inspect_with_template_then_db_round_trip(client: TestClient, db_path: Path) -> None:
    res = post(client, png_bytes(bad_board()), template=png_bytes(good_board()))
    assert res.status_code == 201, res.text
    body = res.json()
    assert res.headers["location"] == f"/v1/inspections/{body['id']}"
    assert body["verdict"] == "defective" and body["defective"] is True
    assert body["max_score"] > body["threshold"]
    assert body["shift"] == {"dy": 0, "dx": 0, "score": pytest.approx(body["shift"]["score"])}
    assert len(body["tiles"]) == body["tile_count"] == 9
    assert body["defective_tiles"] == sum(t["defective"] for t in body["tiles"]) >= 1
    assert set(body["tiles"][0]) == {"y", "x", "h", "w", "score", "defective", "detected"}
    assert not any(t["detected"] for t in body["tiles"])  # no detector: only the scores decide
    assert body["board"] is None and body["reference_filename"] == "template.png"
    assert body["seconds"] > 0 and body["created_at"].endswith(("Z", "+00:00"))

    # the row was committed before the response: read the file directly
    with sqlite3.connect(db_path) as con:
        row = con.execute(
            "SELECT verdict, defective, tile_count, tiles, tested_sha256, model_id FROM inspections WHERE id = ?",
            (body["id"],),
        ).fetchone()
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert row[0] == "defective" and row[1] == 1 and row[2] == 9
    import hashlib
    import json

    assert json.loads(row[3]) == body["tiles"]
    assert row[4] == hashlib.sha256(png_bytes(bad_board())).hexdigest() == body["tested_sha256"]
    assert row[5] == body["model_id"] and len(row[5]) == 64

    got = client.get(f"/v1/inspections/{body['id']}")
    assert got.status_code == 200 and got.json() == body


def test_inspect_with_board_name_and_overlay(client: TestClient) -> None:
    res = post(client, png_bytes(good_board()), board_name="demo")
    assert res.status_code == 201, res.text
    body = res.json()
    assert body["verdict"] == "pass" and body["max_score"] == pytest.approx(0.0, abs=1e-5)
    assert body["board"] == "demo" and body["reference_sha256"] is None
    png = client.get(body["overlay_url"])
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    assert png.content[:8] == b"\x89PNG\r\n\x1a\n"


def test_boards_health_page_openapi(client: TestClient) -> None:
    assert client.get("/v1/boards").json() == {"boards": [{"name": "demo", "height": 192, "width": 192}]}
    health = client.get("/healthz").json()
    assert health["status"] == "ok" and health["boards"] == 1
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"] and "Inspect" in page.text
    assert "http://" not in page.text and "https://" not in page.text  # no CDN
    doc = client.get("/openapi.json").json()
    assert {
        "/v1/inspect",
        "/v1/inspections",
        "/v1/inspections/{inspection_id}",
        "/v1/inspections/{inspection_id}/overlay.png",
        "/v1/boards",
        "/healthz",
    } <= set(doc["paths"])
    assert doc["paths"]["/v1/inspect"]["post"]["description"]
    assert doc["info"]["description"]


# ---------------------------------------------------------------- listing


@pytest.fixture(scope="module")
def recorded(client: TestClient) -> tuple[datetime, datetime, list[str]]:
    """Three inspections made back to back: pass (board), pass (template), defective (board)."""
    start = datetime.now(UTC) - timedelta(milliseconds=1)
    ids = [
        post(client, png_bytes(good_board()), board_name="demo").json()["id"],
        post(client, png_bytes(good_board()), template=png_bytes(good_board())).json()["id"],
        post(client, png_bytes(bad_board()), board_name="demo").json()["id"],
    ]
    return start, datetime.now(UTC) + timedelta(milliseconds=1), ids


def window(recorded, **params) -> dict:
    start, end, _ = recorded
    return {"since": start.isoformat(), "until": end.isoformat(), **params}


def test_listing_pages_newest_first(client: TestClient, recorded) -> None:
    ids = recorded[2]
    first = client.get("/v1/inspections", params=window(recorded, limit=2)).json()
    assert first["total"] == 3 and first["next_offset"] == 2
    assert [r["id"] for r in first["items"]] == ids[::-1][:2]
    assert "tiles" not in first["items"][0]
    second = client.get("/v1/inspections", params=window(recorded, limit=2, offset=2)).json()
    assert [r["id"] for r in second["items"]] == [ids[0]] and second["next_offset"] is None


def test_listing_filters(client: TestClient, recorded) -> None:
    ids = recorded[2]
    bad = client.get("/v1/inspections", params=window(recorded, verdict="defective")).json()
    assert [r["id"] for r in bad["items"]] == [ids[2]]
    good = client.get("/v1/inspections", params=window(recorded, verdict="pass")).json()
    assert [r["id"] for r in good["items"]] == ids[1::-1]
    naive_future = (datetime.now(UTC) + timedelta(hours=1)).replace(tzinfo=None).isoformat()
    assert client.get("/v1/inspections", params={"since": naive_future}).json()["total"] == 0
    everything = client.get("/v1/inspections", params={"limit": 200}).json()
    assert everything["total"] >= 3


@pytest.mark.parametrize(
    "params, words",
    [
        ({"limit": 201}, ["limit", "200"]),
        ({"limit": 0}, ["limit"]),
        ({"offset": -1}, ["offset"]),
        ({"verdict": "maybe"}, ["verdict"]),
        ({"since": "yesterday"}, ["since"]),
    ],
)
def test_listing_bad_parameters(client: TestClient, params: dict, words: list[str]) -> None:
    assert_sentence(client.get("/v1/inspections", params=params), 422, "query parameter", *words)


def test_unknown_ids_and_routes(client: TestClient) -> None:
    assert_sentence(client.get("/v1/inspections/nope"), 404, "no inspection", "nope")
    assert_sentence(client.get("/v1/inspections/nope/overlay.png"), 404, "no inspection")
    assert_sentence(client.get("/v2/whatever"), 404, "no such endpoint")
    assert_sentence(client.delete("/v1/boards"), 405)


# ---------------------------------------------------------------- bad input


def test_oversized_upload_by_content_length(client: TestClient) -> None:
    noise = np.random.default_rng(0).integers(0, 256, (800, 800), dtype=np.uint8)  # ~640 KB as PNG
    res = post(client, png_bytes(noise), board_name="demo")
    assert_sentence(res, 413, "larger than", str(MAX_UPLOAD))


def test_oversized_upload_without_content_length(client: TestClient) -> None:
    def chunks():
        yield b'--b\r\nContent-Disposition: form-data; name="tested"; filename="t.png"\r\n\r\n'
        for _ in range(20):
            yield b"\0" * 65536
        yield b"\r\n--b--\r\n"

    res = client.post("/v1/inspect", content=chunks(), headers={"content-type": "multipart/form-data; boundary=b"})
    assert "content-length" not in res.request.headers
    assert_sentence(res, 413, "larger than")


def test_body_limit_stops_reading_the_stream() -> None:
    """The guard refuses as soon as the limit is passed instead of reading the whole body first."""
    pulled = 0

    async def app(scope, receive, send):
        while (await receive()).get("more_body"):
            pass
        raise AssertionError("the guard should have stopped the body")

    async def receive():
        nonlocal pulled
        pulled += 1
        return {"type": "http.request", "body": b"x" * 1000, "more_body": True}

    sent: list[dict] = []

    async def send(message):
        sent.append(message)

    from fastapi import FastAPI
    from starlette.middleware.exceptions import ExceptionMiddleware

    inner = ExceptionMiddleware(app, handlers=FastAPI().exception_handlers)
    scope = {"type": "http", "method": "POST", "path": "/v1/inspect", "headers": []}
    asyncio.run(Guard(inner, token=None, max_body=10_000)(scope, receive, send))
    assert pulled == 11 and sent[0]["status"] == 413


def test_pixel_bomb_header_only(client: TestClient) -> None:
    assert_sentence(post(client, png_header_only(100_000, 100_000), board_name="demo"), 413, "'tested'")


def test_pixel_bomb_real_1bit_png(client: TestClient) -> None:
    buf = io.BytesIO()
    Image.new("1", (6000, 6000)).save(buf, format="PNG")
    assert len(buf.getvalue()) < MAX_UPLOAD  # small in bytes, 36 M pixels
    detail = assert_sentence(post(client, buf.getvalue(), board_name="demo"), 413, "'tested'", "6000x6000")
    assert str(ServiceSettings().max_pixels) in detail


def test_truncated_image(client: TestClient) -> None:
    noise = np.random.default_rng(1).integers(0, 256, (192, 192), dtype=np.uint8)
    data = png_bytes(noise)
    assert_sentence(post(client, data[: len(data) // 2], board_name="demo"), 422, "'tested'", "truncated")


def test_not_an_image(client: TestClient) -> None:
    assert_sentence(post(client, b"%PDF-1.4 not a board", board_name="demo"), 422, "'tested'", "not an image")
    res = post(client, png_bytes(good_board()), template=b"")
    assert_sentence(res, 422, "'template'", "empty")
    res = post(client, png_bytes(good_board()), template=b"GIF89a....")
    assert_sentence(res, 422, "'template'", "not an image")


def test_wrong_and_missing_fields(client: TestClient) -> None:
    res = client.post("/v1/inspect", files={"image": ("t.png", png_bytes(good_board()))}, data={"board": "demo"})
    assert_sentence(res, 422, "'tested'", "required", "'image'")
    res = client.post("/v1/inspect", files={"tested": ("t.png", png_bytes(good_board()))})
    assert_sentence(res, 422, "exactly one of", "'template'", "'board'")
    res = post(client, png_bytes(good_board()), template=png_bytes(good_board()), board_name="demo")
    assert_sentence(res, 422, "exactly one of")
    assert_sentence(client.post("/v1/inspect", json={"tested": "x"}), 422, "'tested'")
    res = client.post("/v1/inspect", data={"tested": "not a file", "board": "demo"})
    assert_sentence(res, 422, "'tested'")


def test_unknown_board(client: TestClient) -> None:
    assert_sentence(post(client, png_bytes(good_board()), board_name="nope"), 422, "unknown board", "demo")


def test_size_mismatch_and_unregistrable(client: TestClient) -> None:
    res = post(client, png_bytes(board(1, 160)), board_name="demo")
    assert_sentence(res, 422, "160x160", "192x192", "same size")
    res = post(client, png_bytes(board(1, 192)), template=png_bytes(board(7, 192)))
    assert_sentence(res, 422)
    res = post(client, png_bytes(board(1, 40)), template=png_bytes(board(1, 40)))
    assert_sentence(res, 422, "smaller than")


def test_unexpected_error_is_a_json_500_and_the_server_lives_on(client: TestClient, monkeypatch) -> None:
    store = client.app.state.service.store

    def boom(_id: str) -> None:
        raise RuntimeError("simulated bug")

    monkeypatch.setattr(store, "get", boom)
    assert_sentence(client.get("/v1/inspections/x"), 500, "internal error")
    monkeypatch.undo()
    assert client.get("/healthz").status_code == 200


# ---------------------------------------------------------------- token and queue


def test_bearer_token(serve_bundle: Path, tmp_path: Path) -> None:
    app = create_app(serve_bundle, f"sqlite:///{tmp_path / 't.db'}", token="s3cret")
    with TestClient(app, base_url="http://localhost") as c:
        res = c.get("/v1/boards")
        assert_sentence(res, 401, "bearer token")
        assert res.headers["www-authenticate"].startswith("Bearer")
        res = c.get("/v1/boards", headers={"Authorization": "Bearer wrong"})
        assert_sentence(res, 401, "wrong")
        assert 'error="invalid_token"' in res.headers["www-authenticate"]
        assert_sentence(post(c, png_bytes(good_board()), board_name="demo"), 401)
        assert c.get("/healthz").status_code == 200 and c.get("/").status_code == 200
        ok = c.get("/v1/boards", headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 200
        assert "HTTPBearer" in c.get("/openapi.json").json()["components"]["securitySchemes"]


def test_bearer_header_forms(serve_bundle: Path, tmp_path: Path) -> None:
    app = create_app(serve_bundle, f"sqlite:///{tmp_path / 'forms.db'}", token="s3cret")
    with TestClient(app, base_url="http://localhost") as c:
        for value in ("Basic czNjcmV0", "Bearer", "s3cret"):
            res = c.get("/v1/boards", headers={"Authorization": value})
            assert_sentence(res, 401, "Bearer <token>")
            assert 'error="invalid_request"' in res.headers["www-authenticate"]
        for value in ("bearer s3cret", "Bearer   s3cret"):
            assert c.get("/v1/boards", headers={"Authorization": value}).status_code == 200, value
        assert_sentence(c.get("/v1/boards", headers={"Authorization": "Bearer s3cret2"}), 401, "wrong")


def test_token_is_checked_before_the_body_is_read() -> None:
    async def app(scope, receive, send):
        raise AssertionError("the guard should have refused the request")

    async def receive():
        raise AssertionError("the guard should not read the body")

    sent: list[dict] = []

    async def send(message):
        sent.append(message)

    headers = [(b"content-length", b"100000"), (b"authorization", b"Bearer nope")]
    scope = {"type": "http", "method": "POST", "path": "/v1/inspect", "headers": headers}
    asyncio.run(Guard(app, token="s3cret", max_body=10_000)(scope, receive, send))
    assert sent[0]["status"] == 401


def test_queue_bound_gives_503(serve_bundle: Path, tmp_path: Path, monkeypatch) -> None:
    app = create_app(serve_bundle, f"sqlite:///{tmp_path / 'q.db'}", max_concurrency=1, max_queue=0)
    service = app.state.service
    release = threading.Event()

    real = service.inspect

    def slow(*args):
        release.wait(10)
        return real(*args)

    monkeypatch.setattr(service, "inspect", slow)

    async def scenario() -> tuple[int, int, dict]:
        files = {"tested": ("t.png", png_bytes(good_board()))}
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost") as ac:
            first = asyncio.create_task(ac.post("/v1/inspect", files=files, data={"board": "demo"}))
            for _ in range(100):
                if service.pending:
                    break
                await asyncio.sleep(0.02)
            second = await ac.post("/v1/inspect", files=files, data={"board": "demo"})
            release.set()
            return (await first).status_code, second.status_code, dict(second.headers) | second.json()

    try:
        first, second, info = asyncio.run(scenario())
    finally:
        release.set()
        service.close()
    assert second == 503 and "busy" in info["detail"] and info["retry-after"]
    assert first == 201


def test_settings_are_checked_once_for_the_app_and_the_cli() -> None:
    from pcbsiam.errors import PcbsiamError

    assert ServiceSettings(max_queue=0).inspector_args == {
        "device": "cpu",
        "overlap": 0.0,
        "max_shift": 16,
        "batch_size": 32,
    }
    with pytest.raises(PcbsiamError, match="max_concurrency must be >= 1"):
        ServiceSettings(max_concurrency=0)
    with pytest.raises(TypeError):
        create_app("unused.bundle", max_uploads=1)  # a misspelt setting is refused before anything loads


# ---------------------------------------------------------------- detections


@pytest.fixture(scope="module")
def detecting(serve_bundle: Path, tmp_path_factory: pytest.TempPathFactory):
    """A service running the classical detector besides the tiles, and its database file."""
    db = tmp_path_factory.mktemp("detecting") / "inspections.db"
    app = create_app(serve_bundle, f"sqlite:///{db}", detector="classical")
    with TestClient(app, base_url="http://localhost") as c:
        yield c, db


def test_detections_are_returned_recorded_and_read_back(detecting, client: TestClient) -> None:
    c, db = detecting
    body = post(c, png_bytes(bad_board()), template=png_bytes(good_board())).json()
    plain = post(client, png_bytes(bad_board()), template=png_bytes(good_board())).json()
    assert body["tiles"] == plain["tiles"] and body["verdict"] == plain["verdict"] == "defective"
    assert plain["detections"] == [] and len(body["detections"]) >= 1
    d = body["detections"][0]
    assert set(d) == {"box", "type", "code", "confidence"} and len(d["box"]) == 4 and 0 < d["confidence"] <= 1
    x1, y1, x2, y2 = d["box"]
    assert x1 <= 70 and y1 <= 70 and x2 >= 86 and y2 >= 86  # around the inverted square
    with sqlite3.connect(db) as con:
        rows = con.execute(
            "SELECT x1, y1, x2, y2, type, code, confidence FROM detections WHERE inspection_id = ? ORDER BY id",
            (body["id"],),
        ).fetchall()
    assert rows == [(*e["box"], e["type"], e["code"], e["confidence"]) for e in body["detections"]]
    assert c.get(f"/v1/inspections/{body['id']}").json() == body
    assert post(c, png_bytes(good_board()), board_name="demo").json()["detections"] == []
    png = c.get(body["overlay_url"])
    assert png.status_code == 200 and png.content[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_database_of_the_older_version_opens_and_gains_the_detections_table(
    serve_bundle: Path, tmp_path: Path
) -> None:
    from sqlalchemy import create_engine, insert

    from pcbsiam.serve.db import inspections

    db = tmp_path / "old.db"
    engine = create_engine(f"sqlite:///{db}")
    inspections.create(engine)  # the older version's only table, with one inspection
    with engine.begin() as conn:
        conn.execute(
            insert(inspections).values(
                id="00000000-0000-4000-8000-000000000000",
                created_at=datetime.now(UTC),
                verdict="pass",
                defective=False,
                max_score=0.0,
                score_name="L2 distance",
                threshold=0.1,
                shift_dy=0,
                shift_dx=0,
                shift_score=1.0,
                height=192,
                width=192,
                tile_count=0,
                defective_tiles=0,
                tiles=[],
                tested_sha256="0" * 64,
                model_id="0" * 64,
                seconds=0.1,
            )
        )
    engine.dispose()
    app = create_app(serve_bundle, f"sqlite:///{db}", detector="classical")
    with TestClient(app, base_url="http://localhost") as c:
        old = c.get("/v1/inspections/00000000-0000-4000-8000-000000000000")
        assert old.status_code == 200 and old.json()["detections"] == []
        new = post(c, png_bytes(bad_board()), template=png_bytes(good_board()))
        assert new.status_code == 201 and new.json()["detections"]
    with sqlite3.connect(db) as con:
        assert con.execute("SELECT count(*) FROM detections").fetchone()[0] == len(new.json()["detections"])


def test_flagging_detections_make_their_tiles_defective(serve_bundle: Path, tmp_path: Path) -> None:
    from pcbsiam.errors import PcbsiamError

    app = create_app(serve_bundle, f"sqlite:///{tmp_path / 'f.db'}", detector="classical", flag_detections=0.0)
    with TestClient(app, base_url="http://localhost") as c:
        body = post(c, png_bytes(bad_board()), template=png_bytes(good_board())).json()
    detected = [t for t in body["tiles"] if t["detected"]]
    assert body["detections"] and detected and all(t["defective"] for t in detected)
    with pytest.raises(PcbsiamError, match="needs a detector"):
        create_app(serve_bundle, f"sqlite:///{tmp_path / 'g.db'}", flag_detections=0.99)


def test_an_unknown_detector_is_refused_before_serving(serve_bundle: Path, tmp_path: Path) -> None:
    from pcbsiam.errors import PcbsiamError

    with pytest.raises(PcbsiamError, match="neither 'classical' nor an existing file"):
        create_app(serve_bundle, f"sqlite:///{tmp_path / 'x.db'}", detector="nosuchfile")
    with pytest.raises(PcbsiamError, match="give --detector PATH"):  # the verifier's graph needs a learned detector
        create_app(serve_bundle, f"sqlite:///{tmp_path / 'y.db'}", detector="classical", detector_engine="v.onnx")


def test_an_onnx_engine_serves_the_same_tiles_and_a_foreign_graph_is_refused(
    serve_bundle: Path, client: TestClient, tmp_path: Path
) -> None:
    pytest.importorskip("onnxruntime")
    from pcbsiam.deploy.bundle import load_bundle
    from pcbsiam.deploy.export import export_onnx
    from pcbsiam.errors import ConfigError, PcbsiamError
    from tests.conftest import make_tiny_bundle

    graph = export_onnx(load_bundle(serve_bundle), tmp_path / "m.onnx")
    app = create_app(serve_bundle, f"sqlite:///{tmp_path / 'onnx.db'}", engine=str(graph))
    with TestClient(app, base_url="http://localhost") as c:
        body = post(c, png_bytes(bad_board()), template=png_bytes(good_board())).json()
    plain = post(client, png_bytes(bad_board()), template=png_bytes(good_board())).json()
    assert body["verdict"] == plain["verdict"] == "defective"
    assert [t["score"] for t in body["tiles"]] == pytest.approx([t["score"] for t in plain["tiles"]], abs=1e-4)
    other = export_onnx(load_bundle(make_tiny_bundle(tmp_path / "o.bundle", threshold=0.3)), tmp_path / "o.onnx")
    with pytest.raises(PcbsiamError, match="exported from another bundle"):
        create_app(serve_bundle, f"sqlite:///{tmp_path / 'x.db'}", engine=str(other))
    with pytest.raises(ConfigError, match="neither 'torch' nor an ONNX file"):
        create_app(serve_bundle, f"sqlite:///{tmp_path / 'y.db'}", engine="nosuch.onnx")
