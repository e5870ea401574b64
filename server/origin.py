"""Refuse state-changing requests that a web page on another site makes a visitor's browser send.

CORS hides responses from foreign pages, but "simple" requests (a form post, a `text/plain` body) still
reach the handlers: a page could create or delete collections, upload files or start generation on a
server on the visitor's machine. Browsers put an `Origin` header on such requests, so any POST, PUT, PATCH
or DELETE (and any WebSocket) whose `Origin` is neither this server's own address nor listed in vLLM's
`--allowed-origins` gets a 403. Clients that are not browsers send no `Origin` and pass.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from server.errors import ForbiddenError, send_error

STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def foreign_origin(headers: Headers, allowed: Sequence[str]) -> str | None:
    """The request's `Origin` when it is another site's and not allowed; None when the request may pass."""
    origin = headers.get("origin")
    if origin is None or "*" in allowed or origin in allowed:
        return None
    if origin != "null" and urlsplit(origin).netloc == headers.get("host"):
        return None  # the server's own pages (the UI)
    return origin


class OriginCheckMiddleware:
    def __init__(self, app: ASGIApp, allowed_origins: Sequence[str] = ()) -> None:
        self.app = app
        self.allowed = tuple(allowed_origins)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        checked = scope["type"] == "websocket" or (
            scope["type"] == "http" and scope["method"] in STATE_CHANGING
        )
        origin = foreign_origin(Headers(scope=scope), self.allowed) if checked else None
        if origin is None:
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008, "reason": "foreign origin"})
            return
        allow = json.dumps([origin])
        error = ForbiddenError(
            f"Requests from pages on {origin} may not change this server. If that site is yours, start "
            f"lcrag serve with --allowed-origins '{allow}'.",
            param="Origin",
        )
        await send_error(error, scope, receive, send)
