"""Refuse request bodies over LCRAG_MAX_REQUEST_MB with a 413 before they are buffered.

A declared `Content-Length` over the limit is answered at once, without reading the body. A chunked body
is counted as it arrives; at the limit the handler is stopped (its own error reply is swallowed) and the
client gets the 413, so a multi-gigabyte upload never reaches Starlette's form parser or the disk.
"""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.errors import PayloadTooLargeError, send_error


class _BodyTooLarge(Exception):
    pass


def too_large(limit_bytes: int) -> PayloadTooLargeError:
    return PayloadTooLargeError(
        f"The request body is larger than the server's {limit_bytes // 1_000_000} MB limit "
        "(LCRAG_MAX_REQUEST_MB): send fewer or smaller files per request."
    )


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, limit_bytes: int) -> None:
        self.app = app
        self.limit = limit_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > self.limit:
            await send_error(too_large(self.limit), scope, receive, send)
            return
        seen = 0
        refused = False
        started = False

        async def counted_receive() -> Message:
            nonlocal seen, refused
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    refused = True
                    raise _BodyTooLarge
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if refused:
                return  # the handler's reply to the stopped body; the 413 goes instead
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted_receive, guarded_send)
        except _BodyTooLarge:
            pass
        except Exception:
            if not refused:
                raise
        if refused and not started:
            await send_error(too_large(self.limit), scope, receive, send)
