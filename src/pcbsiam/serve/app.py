"""The inspection service: a FastAPI app over :class:`~pcbsiam.serve.service.InspectionService`.

Create it with :func:`create_app` (``pcbsiam serve`` does, then runs it with uvicorn).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, FastAPI, File, Form, Query, Request, Response, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import AfterValidator
from pydantic_core import PydanticCustomError
from starlette.exceptions import HTTPException as StarletteHTTPException

from pcbsiam import __version__
from pcbsiam.serve.db import StoreUnavailable
from pcbsiam.serve.middleware import BEARER, Guard, shown
from pcbsiam.serve.schemas import (
    Boards,
    ErrorOut,
    Health,
    HealthDown,
    InspectionOut,
    InspectionPage,
    record_out,
)
from pcbsiam.serve.service import RETRY, InspectionService, ServiceError, ServiceSettings, Upload

log = logging.getLogger(__name__)

DESCRIPTION = """\
Decides whether a PCB board is defective by comparing it tile by tile with a defect-free reference:
either a template image uploaded with it or a standard board registered in the model bundle.

* Every inspection is committed to the database before its response is sent.
* The tested image is stored losslessly in the inspection's row, so its overlay can be drawn on demand.
* With a detector (`pcbsiam serve --detector`), an inspection also lists typed defect boxes (`detections`);
  the verdict stays the tiles'.
* Errors are JSON objects `{"detail": "<one sentence>"}`; bad input never gives a 500.
* When the service runs with a token, every `/v1/*` call needs `Authorization: Bearer <token>`.
* Requests must name one of the service's allowed hosts in `Host` (400 otherwise); a write whose `Origin`
  (or `Referer`) is another site is refused (403).
"""

#: Largest ``offset``: what a signed 64-bit integer (SQLite's, PostgreSQL's ``bigint``) holds.
MAX_OFFSET = 2**63 - 1

_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorOut, "description": "missing or wrong bearer token"},
    422: {"model": ErrorOut, "description": "a missing or invalid field or parameter"},
}
_UPLOAD_ERRORS: dict[int | str, dict[str, Any]] = {
    **_ERRORS,
    413: {"model": ErrorOut, "description": "request body or image pixel count over the limit"},
    422: {
        "model": ErrorOut,
        "description": "missing field, not an image, truncated image, sizes that do not register, unknown board",
    },
    503: {
        "model": ErrorOut,
        "description": "too many inspections queued, past the time limit, or the database cannot be written; "
        "retry after `Retry-After` seconds",
    },
}


def _sentence(errors: list[dict[str, Any]]) -> str:
    where = {"body": "form field", "query": "query parameter", "path": "path parameter", "header": "header"}
    parts = []
    for err in errors:
        loc = [str(p) for p in err.get("loc", ())]
        kind = where.get(loc[0], loc[0]) if loc else "request"
        name = shown(loc[-1], 40) if len(loc) > 1 else ""
        if err.get("type") == "missing":
            parts.append(f"{kind} {name} is required".replace("  ", " "))
        else:
            msg = " ".join(str(err.get("msg", "invalid")).removeprefix("Value error, ").split())[:200]
            parts.append(f"{kind} {name}: {msg}".replace("  ", " "))
    return "; ".join(parts[:5]) or "the request is invalid"


def _as_utc(t: datetime) -> datetime:
    """``t`` in UTC (a naive time is taken as UTC); a validation error when UTC cannot hold it."""
    if t.tzinfo is None:
        return t.replace(tzinfo=UTC)
    try:
        return t.astimezone(UTC)
    except OverflowError:
        raise PydanticCustomError(
            "datetime_utc_range", "the time falls outside years 1 to 9999 once converted to UTC"
        ) from None


#: A query time, converted to UTC.
UTCTime = Annotated[datetime, AfterValidator(_as_utc)]


def create_app(
    bundle_path: str | Path,
    db_url: str = "sqlite:///inspections.db",
    token: str | None = None,
    settings: ServiceSettings | None = None,
    **fields: Any,
) -> FastAPI:
    """The inspection service for a calibrated bundle.

    Args:
        bundle_path: calibrated bundle file (``pcbsiam calibrate`` writes one).
        db_url: SQLAlchemy URL of the inspection records (SQLite files get WAL and ``synchronous=FULL``).
        token: bearer token required on ``/v1/*``; ``None`` leaves the API open.
        settings: limits and inspection settings (:class:`~pcbsiam.serve.service.ServiceSettings`).
        **fields: single settings overriding ``settings`` (``max_upload_bytes=...``, ``max_queue=...``).

    Raises:
        PcbsiamError: the bundle is missing, unreadable or uncalibrated, or the database cannot be opened.
        TypeError: a field that is not a setting.
    """
    settings = replace(settings or ServiceSettings(), **fields)
    service = InspectionService(bundle_path, db_url, settings)
    store = service.store
    page = _static("index.html")

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        service.close()

    app = _fastapi(title="pcbsiam inspection service", version=__version__, description=DESCRIPTION, lifespan=lifespan)
    app.state.service = service
    app.add_middleware(Guard, token=token, max_body=settings.max_upload_bytes, allowed_hosts=settings.allowed_hosts)

    @app.exception_handler(ServiceError)
    async def service_error(_: Request, exc: ServiceError) -> JSONResponse:
        return JSONResponse({"detail": exc.detail}, exc.status, exc.headers)

    @app.exception_handler(StoreUnavailable)
    async def store_unavailable(_: Request, exc: StoreUnavailable) -> JSONResponse:
        log.error("%s", exc)
        return JSONResponse({"detail": f"{exc}; retry later"}, 503, RETRY)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": _sentence(list(exc.errors()))}, 422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        if exc.status_code == 404 and detail == "Not Found":
            detail = "no such endpoint; see /docs for the API"
        elif exc.status_code == 405:
            detail = "this endpoint does not accept that HTTP method; see /docs for the API"
        return JSONResponse({"detail": detail}, exc.status_code, exc.headers)

    # The Guard middleware enforces the token before the body is read; this dependency documents it.
    deps = [Depends(BEARER)] if token else []
    v1 = APIRouter(prefix="/v1", dependencies=deps, responses={401: _ERRORS[401]} if token else {})

    @app.get("/", include_in_schema=False)
    def review_page() -> HTMLResponse:
        return HTMLResponse(page)

    @app.get("/healthz", response_model=Health, tags=["service"], responses={503: {"model": HealthDown}})
    def healthz() -> Any:
        """Liveness and readiness: the model is loaded and the database can be written now."""
        state = {
            "model_id": service.model_id,
            "boards": len(service.boards),
            "pending": service.pending,
            "capacity": service.capacity,
        }
        try:
            store.check_writable(min_free_bytes=settings.max_upload_bytes)
        except StoreUnavailable as exc:
            log.warning("not ready: %s", exc)
            return JSONResponse({"status": "unavailable", "detail": str(exc), **state}, 503, RETRY)
        return {"status": "ok", **state}

    @v1.get("/boards", response_model=Boards, tags=["boards"])
    def boards() -> dict[str, Any]:
        """Standard boards registered in the model bundle, usable as `board` in `POST /v1/inspect`."""
        return {"boards": [{"name": n, "height": h, "width": w} for n, (h, w) in service.boards.items()]}

    @v1.post("/inspect", status_code=201, response_model=InspectionOut, tags=["inspections"], responses=_UPLOAD_ERRORS)
    async def inspect(
        request: Request,
        response: Response,
        tested: Annotated[
            UploadFile | None, File(description="image of the board to inspect (PNG, JPEG, BMP, TIFF, WebP); required")
        ] = None,
        template: Annotated[
            UploadFile | None,
            File(description="image of a defect-free board of the same design and size; or give `board`"),
        ] = None,
        board: Annotated[
            str | None,
            Form(description="name of a registered standard board (see `GET /v1/boards`); or give `template`"),
        ] = None,
    ) -> dict[str, Any]:
        """Inspect a board against a template image or a registered board; the result is recorded first.

        Multipart form: `tested` and exactly one of `template` and `board`.
        """
        if tested is None or (template is None) == (not board):
            fields = sorted((await request.form()).keys())
            got = f"; the request has {', '.join(repr(f) for f in fields)}" if fields else "; the request has none"
            if tested is None:
                raise ServiceError(422, f"form field 'tested' (the board image to inspect) is required{got}")
            raise ServiceError(
                422,
                "give exactly one of form field 'template' (an image) and form field 'board' "
                f"(a registered board name){got}",
            )
        if board:
            service.check_board(board)
        upload = Upload("tested", tested.filename, await tested.read())
        reference = None if template is None else Upload("template", template.filename, await template.read())
        row = await service.run(service.inspect, upload, reference, board or None)
        response.headers["Location"] = f"/v1/inspections/{row['id']}"
        return record_out(row)

    @v1.get("/inspections", response_model=InspectionPage, tags=["inspections"], responses=_ERRORS)
    def list_inspections(
        limit: Annotated[int, Query(ge=1, le=200, description="page size")] = 50,
        offset: Annotated[int, Query(ge=0, le=MAX_OFFSET, description="inspections to skip")] = 0,
        verdict: Annotated[Literal["defective", "pass"] | None, Query(description="only this verdict")] = None,
        since: Annotated[UTCTime | None, Query(description="only at or after this ISO time (UTC if no zone)")] = None,
        until: Annotated[UTCTime | None, Query(description="only before this ISO time (UTC if no zone)")] = None,
    ) -> dict[str, Any]:
        """Recorded inspections, newest first, without their tiles."""
        rows, total = store.page(limit, offset, verdict, since, until)
        nxt = offset + len(rows) if offset + len(rows) < total else None
        return {
            "items": [record_out(r, tiles=False) for r in rows],
            "total": total,
            "limit": limit,
            "offset": offset,
            "next_offset": nxt,
        }

    @v1.get(
        "/inspections/{inspection_id}",
        response_model=InspectionOut,
        tags=["inspections"],
        responses={404: {"model": ErrorOut, "description": "unknown id"}, **_ERRORS},
    )
    def get_inspection(inspection_id: str) -> dict[str, Any]:
        """One recorded inspection with its tiles."""
        row = store.get(inspection_id)
        if row is None:
            raise ServiceError(404, f"no inspection with id {shown(inspection_id)}")
        return record_out(row)

    @v1.get(
        "/inspections/{inspection_id}/overlay.png",
        tags=["inspections"],
        response_class=Response,
        responses={
            200: {"content": {"image/png": {}}, "description": "the overlay"},
            404: {"model": ErrorOut, "description": "unknown id, or no stored image"},
            503: _UPLOAD_ERRORS[503],
        },
    )
    async def overlay(inspection_id: str) -> Response:
        """The tested image with each tile tinted by its score, defective tiles outlined in red, and the
        detector's boxes (when the service runs one) labelled with their type and confidence.

        Drawn on request from the stored image, tile scores and detections.
        """
        png = await service.run(service.overlay, inspection_id)
        return Response(png, media_type="image/png", headers={"Cache-Control": "private, max-age=86400"})

    app.include_router(v1)
    return app


def _static(name: str) -> str:
    return (resources.files("pcbsiam.serve") / "static" / name).read_text(encoding="utf-8")


def _fastapi(**kwargs: Any) -> FastAPI:
    """The app, with ``/docs`` (Swagger UI) and ``/redoc`` served from the ``fastapi-offline`` package's
    copies of their scripts rather than a CDN, so that they work on a machine without internet; without
    that package, ``/docs`` is a page that says where the OpenAPI schema is."""
    try:
        from fastapi_offline import FastAPIOffline
    except ImportError:
        app = FastAPI(docs_url=None, redoc_url=None, **kwargs)
        page = _static("docs.html")
        app.get("/docs", include_in_schema=False)(lambda: HTMLResponse(page))
        return app
    return FastAPIOffline(static_url="/docs-assets", **kwargs)
