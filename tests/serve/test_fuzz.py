"""Property tests of the two endpoints that take the most input: whatever arrives, no 500 and every
error is one sentence. Bounded (60 examples each, no deadline) so that they stay a few seconds."""

from __future__ import annotations

import io
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

for _module in ("fastapi", "multipart", "sqlalchemy", "hypothesis"):
    pytest.importorskip(_module, reason=f"{_module} is not installed: pip install -e '.[serve,dev]'")

from fastapi.testclient import TestClient  # noqa: E402
from hypothesis import HealthCheck, example, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from pcbsiam.serve.app import create_app  # noqa: E402
from tests.serve.conftest import good_board, is_sentence, png_bytes, png_header_only  # noqa: E402

BOUNDED = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    database=None,
)
#: Statuses bad input may get; 201 and 200 when it happens to be good.
ANSWERS = {200, 201, 400, 403, 404, 405, 413, 422, 503}


@pytest.fixture(scope="module")
def client(serve_bundle: Path, tmp_path_factory: pytest.TempPathFactory):
    db = tmp_path_factory.mktemp("fuzz") / "fuzz.db"
    app = create_app(serve_bundle, f"sqlite:///{db}", max_upload_bytes=256 * 1024)
    with TestClient(app, base_url="http://localhost", raise_server_exceptions=False) as c:
        yield c


def assert_answered(res) -> None:
    assert res.status_code in ANSWERS, (res.status_code, res.text[:300])
    if res.status_code >= 400:
        body = res.json()
        assert is_sentence(body.get("detail")), body


def jpeg_bytes(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG")
    return buf.getvalue()


GOOD_PNG = png_bytes(good_board())
GOOD_JPEG = jpeg_bytes(good_board())

files = st.one_of(
    st.binary(max_size=2048),
    st.integers(0, len(GOOD_PNG)).map(lambda n: GOOD_PNG[:n]),  # truncated PNG
    st.integers(0, len(GOOD_JPEG)).map(lambda n: GOOD_JPEG[:n]),  # truncated JPEG
    st.tuples(st.integers(0, 2**31 - 1), st.integers(0, 2**31 - 1)).map(lambda s: png_header_only(*s)),
    st.tuples(st.integers(0, len(GOOD_PNG) - 1), st.binary(min_size=1, max_size=8)).map(
        lambda c: GOOD_PNG[: c[0]] + c[1] + GOOD_PNG[c[0] + len(c[1]) :]  # corrupted PNG
    ),
    st.just(GOOD_PNG),
    st.just(b""),
)
texts = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=300)


@BOUNDED
@given(
    tested=st.one_of(st.none(), files),
    template=st.one_of(st.none(), files),
    board=st.one_of(st.none(), st.just("demo"), texts),
    extra=st.dictionaries(texts.filter(bool), texts, max_size=4),
    filename=texts,
)
def test_upload_never_500(client: TestClient, no_tracebacks, tested, template, board, extra, filename) -> None:
    upload = {}
    if tested is not None:
        upload["tested"] = (filename or "t", tested, "application/octet-stream")
    if template is not None:
        upload["template"] = ("template.png", template, "image/png")
    data = {**extra, **({"board": board} if board is not None else {})}
    assert_answered(client.post("/v1/inspect", files=upload or None, data=data or None))


def iso(moment: datetime, minutes: int | None, sep: str) -> str:
    if minutes is None:
        return moment.isoformat(sep=sep)
    sign, m = ("+" if minutes >= 0 else "-"), abs(minutes)
    return f"{moment.isoformat(sep=sep)}{sign}{m // 60:02d}:{m % 60:02d}"


#: Moments anywhere in years 1 to 9999, half of them within a day of either end.
moments = st.one_of(
    st.datetimes(min_value=datetime.min, max_value=datetime(1, 1, 2)),
    st.datetimes(min_value=datetime(9999, 12, 30), max_value=datetime.max),
    st.datetimes(min_value=datetime.min, max_value=datetime.max),
)
times = st.builds(iso, moments, st.one_of(st.none(), st.integers(-24 * 60, 24 * 60)), st.sampled_from(["T", " "]))
#: Around zero, around the int64 limit, anywhere in 70 bits.
ints = st.one_of(st.integers(-5, 300), st.integers(2**63 - 2, 2**63 + 2), st.integers(-(2**70), 2**70))
values = st.one_of(
    st.none(),
    ints.map(str),
    st.sampled_from(["0", "1", "200", "201", "1e3", "", " 5", "0x10", "\u0663", "-0", "+7"]),
    times,
    texts,
)


@BOUNDED
@given(
    limit=values,
    offset=values,
    since=st.one_of(values, times),
    until=st.one_of(values, times),
    verdict=st.one_of(values, st.sampled_from(["defective", "pass", "PASS"])),
)
@example(limit=None, offset=str(2**63), since=None, until=None, verdict=None)  # what probing found
@example(limit=None, offset=None, since="9999-12-31T23:00:00-14:00", until=None, verdict=None)
@example(limit="1", offset="0", since="0001-01-01T00:00:00+14:00", until="9999-12-31T23:00:00-14:00", verdict="pass")
def test_listing_never_500(client: TestClient, no_tracebacks, limit, offset, since, until, verdict) -> None:
    params = {"limit": limit, "offset": offset, "since": since, "until": until, "verdict": verdict}
    assert_listed(client.get("/v1/inspections", params={k: v for k, v in params.items() if v is not None}))


@BOUNDED
@given(name=st.sampled_from(["limit", "offset", "since", "until", "verdict"]), value=st.one_of(values, times))
def test_listing_one_parameter_never_500(client: TestClient, no_tracebacks, name: str, value: str | None) -> None:
    # one parameter at a time: a value past the checks is not hidden by another one's 422
    assert_listed(client.get("/v1/inspections", params={} if value is None else {name: value}))


def assert_listed(res) -> None:
    assert_answered(res)
    assert res.status_code in (200, 422), res.text
