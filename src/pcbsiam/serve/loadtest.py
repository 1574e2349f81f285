"""A bounded load test of a running inspection service: N clients, M requests each, a time limit.

Each client is a thread with its own HTTP connection that posts the same images again and again.
The report gives latency percentiles, throughput and errors, and, given the service's database URL,
checks that every inspection whose response arrived is recorded.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from pcbsiam.errors import PcbsiamError


@dataclass
class LoadReport:
    """What a load test measured (latencies in seconds)."""

    url: str
    clients: int
    requests: int
    completed: int = 0
    ok: int = 0
    errors: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    wall_seconds: float = 0.0
    throughput_per_s: float = 0.0
    latency_p50: float = 0.0
    latency_p90: float = 0.0
    latency_p99: float = 0.0
    latency_max: float = 0.0
    latency_mean: float = 0.0
    verdicts: dict[str, int] = field(default_factory=dict)
    stopped_by_deadline: bool = False
    db_checked: int | None = None
    db_missing: list[str] | None = None
    error_samples: list[str] = field(default_factory=list)
    ids: list[str] = field(default_factory=list, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict without the list of ids."""
        d = asdict(self)
        d.pop("ids")
        return d

    def summary(self) -> str:
        """A few human-readable lines."""
        lines = [
            f"{self.completed}/{self.requests} requests by {self.clients} clients in {self.wall_seconds:.1f} s: "
            f"{self.throughput_per_s:.2f} inspections/s, {self.ok} ok, {self.errors} errors {self.statuses}",
            f"latency p50 {self.latency_p50 * 1000:.0f} ms, p90 {self.latency_p90 * 1000:.0f} ms, "
            f"p99 {self.latency_p99 * 1000:.0f} ms, max {self.latency_max * 1000:.0f} ms",
        ]
        if self.stopped_by_deadline:
            lines.append("stopped at the time limit before every request was sent")
        if self.db_checked is not None:
            lines.append(
                f"database: {self.db_checked - len(self.db_missing or [])}/{self.db_checked} returned ids "
                "recorded" + (f"; missing {self.db_missing[:5]}" if self.db_missing else "")
            )
        lines += [f"error: {e}" for e in self.error_samples]
        return "\n".join(lines)


def run_loadtest(
    url: str,
    tested: str | Path,
    template: str | Path | None = None,
    board: str | None = None,
    clients: int = 4,
    requests: int = 25,
    token: str | None = None,
    timeout: float = 120.0,
    max_seconds: float = 600.0,
    db_url: str | None = None,
) -> LoadReport:
    """Post ``clients`` x ``requests`` inspections to ``url`` and measure them.

    Args:
        url: base URL of the service, e.g. ``http://127.0.0.1:8000``.
        tested: tested image file.
        template: template image file, or give ``board``.
        board: registered board name, or give ``template``.
        clients: concurrent clients (threads, one connection each).
        requests: requests per client.
        token: bearer token of the service.
        timeout: per-request timeout in seconds.
        max_seconds: no request starts after this many seconds.
        db_url: the service's database URL; every returned id is then looked up there.

    Raises:
        PcbsiamError: bad arguments, or the service does not answer ``/healthz``.
    """
    if (template is None) == (board is None):
        raise PcbsiamError("give exactly one of a template image and a board name")
    if clients < 1 or requests < 1:
        raise PcbsiamError(f"clients and requests must be >= 1, got {clients} and {requests}")
    files_spec: list[tuple[str, tuple[str, bytes, str]]] = [
        ("tested", (Path(tested).name, Path(tested).read_bytes(), "application/octet-stream"))
    ]
    if template is not None:
        files_spec.append(("template", (Path(template).name, Path(template).read_bytes(), "application/octet-stream")))
    data = {"board": board} if board is not None else {}
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    base = url.rstrip("/")
    try:
        httpx.get(f"{base}/healthz", timeout=10).raise_for_status()
    except httpx.HTTPError as exc:
        raise PcbsiamError(f"the service at {base} does not answer /healthz: {exc}") from exc

    lock = threading.Lock()
    latencies: list[float] = []
    statuses: Counter[str] = Counter()
    verdicts: Counter[str] = Counter()
    ids: list[str] = []
    samples: list[str] = []
    deadline = time.monotonic() + max_seconds
    stopped = threading.Event()

    def client() -> None:
        with httpx.Client(base_url=base, headers=headers, timeout=timeout) as http:
            for _ in range(requests):
                if time.monotonic() > deadline:
                    stopped.set()
                    return
                t0 = time.perf_counter()
                try:
                    res = http.post("/v1/inspect", files=files_spec, data=data)
                    key, body = str(res.status_code), _json(res)
                except httpx.HTTPError as exc:
                    key, body = type(exc).__name__, {"detail": str(exc)}
                took = time.perf_counter() - t0
                with lock:
                    statuses[key] += 1
                    if key == "201":
                        latencies.append(took)
                        ids.append(body["id"])
                        verdicts[body["verdict"]] += 1
                    elif len(samples) < 5:
                        samples.append(f"{key}: {body.get('detail', body)}")

    t0 = time.perf_counter()
    threads = [threading.Thread(target=client, name=f"loadtest-{i}", daemon=True) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0

    completed = sum(statuses.values())
    # numpy's default 'linear' method interpolates between order statistics; 0 when nothing succeeded.
    p50, p90, p99 = np.percentile(latencies, [50, 90, 99]).tolist() if latencies else (0.0, 0.0, 0.0)
    report = LoadReport(
        url=base,
        clients=clients,
        requests=clients * requests,
        completed=completed,
        ok=len(latencies),
        errors=completed - len(latencies),
        statuses=dict(statuses),
        wall_seconds=round(wall, 3),
        throughput_per_s=round(len(latencies) / wall, 3) if wall > 0 else 0.0,
        latency_p50=round(p50, 4),
        latency_p90=round(p90, 4),
        latency_p99=round(p99, 4),
        latency_max=round(max(latencies, default=0.0), 4),
        latency_mean=round(sum(latencies) / len(latencies), 4) if latencies else 0.0,
        verdicts=dict(verdicts),
        stopped_by_deadline=stopped.is_set(),
        error_samples=samples,
        ids=ids,
    )
    if db_url is not None:
        report.db_checked = len(ids)
        report.db_missing = missing_in_db(db_url, ids)
    return report


def _json(res: httpx.Response) -> dict[str, Any]:
    try:
        body = res.json()
    except ValueError:
        return {"detail": res.text[:200]}
    return body if isinstance(body, dict) else {"detail": body}


def missing_in_db(db_url: str, ids: list[str]) -> list[str]:
    """The ids that have no row in the service's database at ``db_url``.

    Raises:
        PcbsiamError: the database file does not exist.
    """
    from sqlalchemy.engine import make_url

    from pcbsiam.serve.db import InspectionStore

    parsed = make_url(db_url)
    if parsed.get_backend_name() == "sqlite" and parsed.database and not Path(parsed.database).is_file():
        raise PcbsiamError(f"database file {parsed.database} not found")
    store = InspectionStore(db_url, create=False)
    try:
        return store.missing(ids)
    finally:
        store.close()
