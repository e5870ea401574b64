"""Call this server's own routes in-process, over ASGI, with the response body streamed as it is produced.

Used where lcrag composes generation requests (`/v1/compare`, the `auto` mode's RAG attempt): the request
takes exactly the path a client's would (middleware, validation, vLLM's handler) without a TCP round trip
or knowing the listen address. httpx's `ASGITransport` collects the whole body before returning, so it
cannot stream; this does, in a few lines.

The synthetic `receive` hands over the body once and then waits until the caller is done: vLLM aborts a
request as soon as `receive` reports a disconnect, so that happens only when the caller stops reading.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope

_END = object()
ABORT_GRACE_S = 5.0


@dataclass
class LoopbackResponse:
    """Status, and the body as it arrives."""

    status: int
    chunks: AsyncIterator[bytes]

    async def read(self) -> bytes:
        return b"".join([chunk async for chunk in self.chunks])

    async def events(self) -> AsyncIterator[dict[str, Any]]:
        """Server-sent `data:` events as JSON objects, until `[DONE]`."""
        pending = b""
        async for chunk in self.chunks:
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                if not line.startswith(b"data: "):
                    continue
                data = line[len(b"data: ") :].strip()
                if data == b"[DONE]":
                    return
                yield json.loads(data)


def request_scope(parent: Scope, path: str, headers: Mapping[str, str]) -> Scope:
    """A POST scope for `path`, sharing the parent request's app, server and lifespan state."""
    scope: Scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": parent.get("scheme", "http"),
        "server": parent.get("server"),
        "client": ("127.0.0.1", 0),
        "root_path": "",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": [(name.lower().encode(), value.encode()) for name, value in headers.items()],
        "state": dict(parent.get("state", {})),
    }
    if "app" in parent:
        scope["app"] = parent["app"]
    return scope


@contextlib.asynccontextmanager
async def post(
    app: ASGIApp, parent: Scope, path: str, payload: dict[str, Any], headers: Mapping[str, str] | None = None
) -> AsyncIterator[LoopbackResponse]:
    """POST `payload` as JSON to `app` at `path`; leaving the block ends (and if unfinished, aborts) it."""
    body = json.dumps(payload).encode()
    all_headers = {**(headers or {}), "content-type": "application/json", "content-length": str(len(body))}
    scope = request_scope(parent, path, all_headers)
    messages: asyncio.Queue[Message | object] = asyncio.Queue()
    finished = asyncio.Event()

    async def disconnect_when_finished() -> Message:
        await finished.wait()
        return {"type": "http.disconnect"}

    receive = replay_body(body, disconnect_when_finished)

    async def send(message: Message) -> None:
        await messages.put(message)

    async def run() -> None:
        try:
            await app(scope, receive, send)
        finally:
            await messages.put(_END)

    task = asyncio.create_task(run())
    try:
        start = await messages.get()
        if start is _END or not isinstance(start, dict):
            await task  # re-raises the app's exception, if any
            raise RuntimeError(f"{path} sent no response")
        yield LoopbackResponse(start["status"], _body_chunks(messages))
    finally:
        finished.set()  # a request still running sees a disconnect and stops generating
        await asyncio.wait({task}, timeout=ABORT_GRACE_S)
        if not task.done():
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):  # the response already says it failed
            await task


def replay_body(body: bytes, then: Receive) -> Receive:
    """A `receive` that yields `body` once as the whole request, then hands over to `then`."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await then()

    return replay


async def _body_chunks(messages: asyncio.Queue[Message | object]) -> AsyncIterator[bytes]:
    while True:
        message = await messages.get()
        if message is _END or not isinstance(message, dict):
            return
        if message["type"] == "http.response.body":
            yield message.get("body", b"")
            if not message.get("more_body", False):
                return
