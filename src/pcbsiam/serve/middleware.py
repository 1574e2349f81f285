"""The ASGI guard in front of the app: allowed hosts, same-origin writes, bearer token, request-body
limit and a last-resort error handler.

All of it is checked here, before a byte of the body is read: a request from the wrong host or site,
unauthenticated or oversized, costs the server nothing. The ``Host`` allow-list stops DNS rebinding
(a web page whose name resolves to the service's address); the origin check stops a web page on another
site from posting forms to the service through a visitor's browser. The body limit is enforced while the
body streams in, so a client that lies about (or omits) ``Content-Length`` is cut off as soon as it
passes the limit.
"""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Iterable
from urllib.parse import urlsplit

from fastapi.security import HTTPBearer
from starlette.exceptions import HTTPException
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger(__name__)

#: The service's bearer scheme: parses ``Authorization`` for the :class:`Guard` and, as a dependency of
#: ``/v1``, documents the token in the OpenAPI schema (``auto_error=False``: the Guard words the 401s).
BEARER = HTTPBearer(auto_error=False, description="the service's token")


#: Methods that do not change anything, which any origin may use.
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
#: Ports a browser leaves out of an origin.
DEFAULT_PORTS = (80, 443)


def shown(value: object, limit: int = 80) -> str:
    """``repr`` of a client-given value for a sentence, cut to ``limit`` characters."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 4] + "...'"


def split_host(value: str) -> tuple[str, int | None] | None:
    """(lower-case name without brackets or final dot, port or None) of a ``Host`` value, None if malformed."""
    if not value or any(c in value for c in "/@?#\\ \t"):
        return None
    try:
        parts = urlsplit("//" + value)
        name, port = parts.hostname, parts.port
    except ValueError:
        return None
    return (name.rstrip("."), port) if name else None


def same_site(url: str, host: tuple[str, int | None]) -> bool:
    """Whether the origin of ``url`` (an ``Origin`` or ``Referer`` value) is the request's ``host``.

    Default ports (80, 443) count as no port on both sides, so that a service behind a TLS proxy
    still matches its own ``https://`` pages."""
    try:
        parts = urlsplit(url)
        name, port = parts.hostname, parts.port
    except ValueError:
        return False
    if parts.scheme not in ("http", "https") or not name:
        return False
    return (name.rstrip("."), None if port in DEFAULT_PORTS else port) == (
        host[0],
        None if host[1] in DEFAULT_PORTS else host[1],
    )


def too_large(limit: int) -> str:
    """The sentence of a 413 for a body over ``limit`` bytes."""
    return f"the request body is larger than the {limit} bytes ({limit / 2**20:.1f} MiB) this service accepts"


async def send_json(send: Send, status: int, detail: str, headers: dict[str, str] | None = None) -> None:
    """Send a whole JSON ``{"detail": ...}`` response."""
    body = json.dumps({"detail": detail}).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


class Guard:
    """Pure ASGI middleware.

    Args:
        app: the wrapped application.
        token: bearer token required on ``/v1/*``; ``None`` for an open service.
        max_body: largest request body in bytes.
        allowed_hosts: names the ``Host`` header may give (any port; ``*`` for any name); ``None`` checks
            neither the host nor the origin of writes.
    """

    def __init__(
        self, app: ASGIApp, token: str | None, max_body: int, allowed_hosts: Iterable[str] | None = None
    ) -> None:
        self.app = app
        self.token = token
        self.max_body = max_body
        self.allowed_hosts = None if allowed_hosts is None else frozenset(allowed_hosts)

    def site_error(self, method: str, headers: dict[str, str]) -> tuple[int, str] | None:
        """(400, sentence) for a host not allowed, (403, sentence) for a write from another site, else None.

        A write (any method but GET, HEAD, OPTIONS, TRACE) must come from the request's own host as its
        ``Origin`` names it, or its ``Referer`` without ``Origin``; a request with neither (curl, scripts)
        is not from a browser and passes."""
        if self.allowed_hosts is None:
            return None
        value = headers.get("host", "")
        host = split_host(value)
        if host is None:
            what = f"the Host header {shown(value)} is not a host name" if value else "the request has no Host header"
            return 400, f"{what}; send the name of the service's host, e.g. 'Host: localhost:8000'"
        if "*" not in self.allowed_hosts and host[0] not in self.allowed_hosts:
            return 400, (
                f"this service does not answer for the host {shown(host[0])}; the names it answers for are set "
                "by its allowed hosts (pcbsiam serve --allowed-hosts)"
            )
        if method.upper() in SAFE_METHODS:
            return None
        for header in ("origin", "referer"):
            if header in headers:
                if same_site(headers[header], host):
                    return None
                return 403, (
                    f"a {method.upper()} from another site is refused: the {header.title()} header "
                    f"{shown(headers[header])} is not this service's own address; send it from the review "
                    "page or from a client that sends no Origin header"
                )
        return None

    async def auth_error(self, request: HTTPConnection) -> tuple[str, str] | None:
        """(sentence, WWW-Authenticate value) when ``request`` does not carry the token, else ``None``."""
        credentials = await BEARER(request)
        if credentials is None:
            if not request.headers.get("authorization"):
                return (
                    "this service requires a bearer token: send the header 'Authorization: Bearer <token>'",
                    'Bearer realm="pcbsiam"',
                )
            return (
                "the Authorization header must read 'Bearer <token>'",
                'Bearer realm="pcbsiam", error="invalid_request"',
            )
        assert self.token is not None
        if not secrets.compare_digest(credentials.credentials.encode(), self.token.encode()):
            return "the bearer token is wrong", 'Bearer realm="pcbsiam", error="invalid_token"'
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        path = scope.get("path", "")
        refused = self.site_error(scope.get("method", "GET"), headers)
        if refused is not None:
            await send_json(send, *refused)
            return
        # Checked here, not in a FastAPI dependency: FastAPI reads a request's whole form body before it
        # runs the dependencies, so an unauthenticated upload would be received before its refusal.
        if self.token is not None and (path == "/v1" or path.startswith("/v1/")):
            error = await self.auth_error(HTTPConnection(scope))
            if error is not None:
                await send_json(send, 401, error[0], {"WWW-Authenticate": error[1]})
                return
        length = headers.get("content-length", "")
        if length.isdigit() and int(length) > self.max_body:
            await send_json(send, 413, too_large(self.max_body), {"Connection": "close"})
            return

        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body:
                    raise HTTPException(413, too_large(self.max_body), {"Connection": "close"})
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except Exception:
            log.exception("unhandled error on %s %s", scope.get("method"), path)
            if not started:
                await send_json(send, 500, "internal error: the server could not handle this request and logged why")
