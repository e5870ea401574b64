"""Stop within seconds on SIGTERM/SIGINT, even with requests in flight, and tell their clients why.

vLLM's own shutdown stops the engine first and then waits for the HTTP server's tasks, which wait on the
stopped engine forever: the process lingers with no socket until SIGKILL. lcrag takes the signals over
once the server has started (`install_signal_handlers`): `GracefulShutdown` ends every in-flight request
with a 503 in OpenAI's error shape (a stream gets an error event and `[DONE]`), generation at once and
other requests (an upload being stored) after up to `GRACE_S`; new requests get the same 503. Then
uvicorn is told to exit, and `serve` leaves vLLM's engine client context, which stops the engine.
A second signal exits at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
from dataclasses import dataclass, field

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.errors import ServiceUnavailableError, send_error

log = logging.getLogger("lcrag.server")

GRACE_S = 5.0  # how long a request that is not generating (an upload, a listing) may take to finish
SHUTDOWN_TIMEOUT_S = 8  # uvicorn cancels whatever is left after this
GENERATION_PREFIXES = ("/v1/chat/completions", "/v1/completions", "/v1/compare", "/v1/responses")
SIGNALS = (signal.SIGTERM, signal.SIGINT)
STOPPED = (
    "lcrag is shutting down and stopped this request before it finished; send it again once the server "
    "is back (or to another one)."
)


def stopped_error() -> ServiceUnavailableError:
    return ServiceUnavailableError(STOPPED)


@dataclass
class _Reply:
    """What has been sent of one response, so a stop can end it cleanly whatever state it is in."""

    send: Send
    started: bool = False
    finished: bool = False
    event_stream: bool = False

    async def forward(self, message: Message) -> None:
        if self.finished:
            return
        if message["type"] == "http.response.start":
            self.started = True
            content_type = Headers(raw=message.get("headers", [])).get("content-type", "")
            self.event_stream = content_type.startswith("text/event-stream")
        elif message["type"] == "http.response.body" and not message.get("more_body", False):
            self.finished = True
        await self.send(message)

    async def end(self, scope: Scope, receive: Receive) -> None:
        """Finish the response with the shutdown error, as far as what was sent already allows."""
        if self.finished:
            return
        self.finished = True
        if not self.started:
            await send_error(stopped_error(), scope, receive, self.send)
            return
        tail = b""
        if self.event_stream:
            tail = b"data: " + json.dumps(stopped_error().body()).encode() + b"\n\ndata: [DONE]\n\n"
        await self.send({"type": "http.response.body", "body": tail, "more_body": False})


@dataclass
class Stopping:
    """Whether the server is stopping, and how many requests are in flight (shared with the middleware)."""

    event: asyncio.Event = field(default_factory=asyncio.Event)
    in_flight: int = 0

    def begin(self) -> None:
        if not self.event.is_set():
            log.info("shutting down: stopping %d request(s) in flight", self.in_flight)
        self.event.set()


class GracefulShutdown:
    """ASGI middleware (outermost): runs each HTTP request as a task it can stop when the server stops."""

    def __init__(self, app: ASGIApp, stopping: Stopping) -> None:
        self.app = app
        self.stopping = stopping

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.stopping.event.is_set():
            await send_error(stopped_error(), scope, receive, send)
            return
        reply = _Reply(send)
        handler = asyncio.ensure_future(self.app(scope, receive, reply.forward))
        self.stopping.in_flight += 1
        try:
            stop = asyncio.ensure_future(self._stop_for(scope["path"]))
            done, _ = await asyncio.wait({handler, stop}, return_when=asyncio.FIRST_COMPLETED)
            stop.cancel()
            if handler in done:
                handler.result()
                return
            handler.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await handler
            await reply.end(scope, receive)
        finally:
            self.stopping.in_flight -= 1
            if not handler.done():
                handler.cancel()

    async def _stop_for(self, path: str) -> None:
        """Returns when a request on `path` must be stopped: at the signal, or GRACE_S after it."""
        await self.stopping.event.wait()
        if not path.startswith(GENERATION_PREFIXES):
            await asyncio.sleep(GRACE_S)


def install_signal_handlers(stopping: Stopping, server_state: object) -> asyncio.Task[None]:
    """Once vLLM's uvicorn server (`app.state.server`, found on `server_state`) has started, answer
    SIGTERM/SIGINT by stopping requests and then the server; a second signal forces the exit."""

    async def install() -> None:
        while getattr(getattr(server_state, "server", None), "started", False) is not True:
            await asyncio.sleep(0.05)
        server = server_state.server  # type: ignore[attr-defined]
        loop = asyncio.get_running_loop()

        def on_signal() -> None:
            if stopping.event.is_set():
                server.force_exit = True
            stopping.begin()
            server.should_exit = True

        for number in SIGNALS:
            loop.add_signal_handler(number, on_signal)

    return asyncio.ensure_future(install())
