"""The API key check in front of every route: with a key set, every route except /health needs
`Authorization: Bearer <key>`, WebSockets and OPTIONS requests included (vLLM's own check covers only /v1,
/v2 and /inference). A plain ASGI class, not `BaseHTTPMiddleware`, so streamed responses pass through."""

from __future__ import annotations

import secrets

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from server.errors import AuthenticationError, send_error

OPEN_PATHS = frozenset({"/health"})


class ApiKeyMiddleware:
    """Rejects requests without the right bearer token with a 401 in OpenAI's error shape."""

    def __init__(self, app: ASGIApp, api_key: str) -> None:
        self.app = app
        self.expected = f"Bearer {api_key}".encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or self._allowed(scope):
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":  # refused before the handshake completes: the client sees a 403
            await send({"type": "websocket.close", "code": 1008, "reason": "missing or wrong API key"})
            return
        error = AuthenticationError(
            "Missing or wrong API key: send the header 'Authorization: Bearer <key>' "
            "with the key the server was started with (--api-key-file / LCRAG_API_KEY).",
        )
        await send_error(error, scope, receive, send)

    def _allowed(self, scope: Scope) -> bool:
        headers = Headers(scope=scope)
        if scope["path"] in OPEN_PATHS or is_cors_preflight(scope, headers):
            return True
        return secrets.compare_digest(headers.get("authorization", "").encode(), self.expected)


def is_cors_preflight(scope: Scope, headers: Headers) -> bool:
    """A browser's CORS preflight: it never carries credentials, and vLLM's CORS middleware answers it
    without reaching a handler. Any other OPTIONS request needs the key like every other method."""
    preflight_headers = "origin" in headers and "access-control-request-method" in headers
    return scope.get("method") == "OPTIONS" and preflight_headers
