"""Crash safety: SIGKILL the server under load; every inspection a client was told about survives, whole."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest

from pcbsiam.cli.serve import main
from tests.serve.conftest import bad_board, free_port, good_board, png_bytes, start_serve, wait_healthy

for _module in ("fastapi", "uvicorn", "multipart", "sqlalchemy"):
    pytest.importorskip(_module, reason="the serve extra is not installed: pip install -e '.[serve]'")

CLIENTS = 4
REQUESTS = 10
KILL_AFTER = 6  # responses received before the server is killed
DEADLINE_S = 60.0


def start_server(bundle: Path, db: Path, port: int, log: Path) -> subprocess.Popen:
    return start_serve(bundle, f"sqlite:///{db}", port, log, "--max-queue", "32")


def test_sigkill_under_load_loses_no_answered_inspection(serve_bundle: Path, tmp_path: Path, capsys) -> None:
    db, log, port = tmp_path / "dur.db", tmp_path / "server.log", free_port()
    url = f"http://127.0.0.1:{port}"
    proc = start_server(serve_bundle, db, port, log)
    try:
        wait_healthy(url, 60, proc)
        answered: dict[str, str] = {}  # id -> verdict, for every 201 a client received
        failures: list[str] = []
        lock = threading.Lock()
        images = [png_bytes(good_board()), png_bytes(bad_board())]
        stop_at = time.monotonic() + DEADLINE_S

        def client(k: int) -> None:
            with httpx.Client(base_url=url, timeout=30) as http:
                for i in range(REQUESTS):
                    if time.monotonic() > stop_at:
                        return
                    files = {"tested": (f"c{k}-{i}.png", images[(k + i) % 2])}
                    try:
                        res = http.post("/v1/inspect", files=files, data={"board": "demo"})
                    except httpx.HTTPError as exc:  # the server died under us
                        with lock:
                            failures.append(type(exc).__name__)
                        return
                    with lock:
                        if res.status_code == 201:
                            answered[res.json()["id"]] = res.json()["verdict"]
                        else:
                            failures.append(f"{res.status_code} {res.text[:200]}")

        threads = [threading.Thread(target=client, args=(k,), daemon=True) for k in range(CLIENTS)]
        for t in threads:
            t.start()
        while time.monotonic() < stop_at and len(answered) < KILL_AFTER and any(t.is_alive() for t in threads):
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)  # mid-load: other requests are in flight
        proc.wait(10)
        for t in threads:
            t.join(35)
        assert not any(t.is_alive() for t in threads)
        assert len(answered) >= KILL_AFTER, (answered, failures, log.read_text()[-2000:])
        assert all(not f[:1].isdigit() for f in failures), failures  # only connection errors, no HTTP errors

        # the file survived the kill intact, with every answered inspection complete
        with sqlite3.connect(db) as con:
            assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            rows = {
                r[0]: r[1:]
                for r in con.execute(
                    "SELECT id, verdict, tile_count, defective_tiles, tiles, tested_png IS NOT NULL FROM inspections"
                )
            }
        assert set(answered) <= set(rows)
        for rid, (verdict, count, n_bad, tiles, has_png) in rows.items():
            tiles = json.loads(tiles)
            assert len(tiles) == count == 9 and sum(t["defective"] for t in tiles) == n_bad and has_png
            assert verdict == answered.get(rid, verdict)

        # and a restarted server on the same file serves them
        proc = start_server(serve_bundle, db, port, log)
        wait_healthy(url, 60, proc)
        with httpx.Client(base_url=url, timeout=30) as http:
            for rid, verdict in answered.items():
                res = http.get(f"/v1/inspections/{rid}")
                assert res.status_code == 200 and res.json()["verdict"] == verdict
                assert len(res.json()["tiles"]) == res.json()["tile_count"]
            assert http.get("/v1/inspections", params={"limit": 200}).json()["total"] == len(rows)
            new = http.post("/v1/inspect", files={"tested": ("after.png", images[0])}, data={"board": "demo"})
            assert new.status_code == 201

        # the load-test command against the restarted server, checking its ids in the database
        tested = tmp_path / "tested.png"
        tested.write_bytes(images[1])
        argv = [
            "serve-loadtest",
            "--url",
            url,
            "--clients",
            "2",
            "--requests",
            "2",
            "--tested",
            str(tested),
            "--board",
            "demo",
            "--db",
            f"sqlite:///{db}",
            "--max-seconds",
            "30",
        ]
        assert main(argv) == 0
        report = json.loads(capsys.readouterr().out)
        assert report["ok"] == 4 and report["errors"] == 0 and report["db_missing"] == []
        assert report["verdicts"] == {"defective": 4} and 0 < report["latency_p50"] <= report["latency_p99"]
    finally:
        proc.kill()
        proc.wait(10)
