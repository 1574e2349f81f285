"""The ASGI guard in front of the app: bearer token, request-body limit and a last-resort error handler.

Token and size are checked here, before a byte of the body is read: an unauthenticated or oversized
upload costs the server nothing. The body limit is enforced while the body streams in, so a client
that lies about (or omits) ``Content-Length`` is cut off as soon as it passes the limit.
"""

from __future__ import annotations

import json
import logging
import secrets

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger(__name__)


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
    """

    def __init__(self, app: ASGIApp, token: str | None, max_body: int) -> None:
        self.app = app
        self.token = token
        self.max_body = max_body

    def auth_error(self, authorization: str | None) -> tuple[str, str] | None:
        """(sentence, WWW-Authenticate value) when ``authorization`` does not carry the token, else ``None``."""
        if not authorization:
            return (
                "this service requires a bearer token: send the header 'Authorization: Bearer <token>'",
                'Bearer realm="pcbsiam"',
            )
        scheme, _, value = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            return (
                "the Authorization header must read 'Bearer <token>'",
                'Bearer realm="pcbsiam", error="invalid_request"',
            )
        if not secrets.compare_digest(value.strip().encode(), self.token.encode()):
            return "the bearer token is wrong", 'Bearer realm="pcbsiam", error="invalid_token"'
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        path = scope.get("path", "")
        if self.token is not None and (path == "/v1" or path.startswith("/v1/")):
            error = self.auth_error(headers.get("authorization"))
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
