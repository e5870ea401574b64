"""In-process ASGI calls stream the body as it is produced, and leaving early disconnects the request."""

import asyncio
import json

import pytest
from starlette.types import Receive, Scope, Send

from server import loopback

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class SlowEvents:
    """An ASGI app that echoes the JSON body, then sends three events 50 ms apart; records disconnects."""

    def __init__(self) -> None:
        self.disconnected = asyncio.Event()
        self.sent = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = json.loads((await receive())["body"])
        asyncio.get_running_loop().create_task(self._watch(receive))
        await send({"type": "http.response.start", "status": 201, "headers": []})
        for i in range(3):
            if self.disconnected.is_set():
                return
            event = json.dumps({"i": i, "echo": body["x"], "path": scope["path"]}).encode()
            await send({"type": "http.response.body", "body": b"data: " + event + b"\n\n", "more_body": True})
            self.sent += 1
            await asyncio.sleep(0.05)
        await send({"type": "http.response.body", "body": b"data: [DONE]\n\n", "more_body": False})

    async def _watch(self, receive: Receive) -> None:
        if (await receive())["type"] == "http.disconnect":
            self.disconnected.set()


async def test_events_arrive_one_by_one_with_status_and_body() -> None:
    app = SlowEvents()
    loop = asyncio.get_running_loop()
    async with loopback.post(app, {}, "/v1/x", {"x": 7}) as response:
        assert response.status == 201
        seen = [(event, loop.time()) async for event in response.events()]
    assert [event for event, _ in seen] == [{"i": i, "echo": 7, "path": "/v1/x"} for i in range(3)]
    assert seen[-1][1] - seen[0][1] >= 0.09  # streamed, not collected at the end


async def test_leaving_early_disconnects_the_request() -> None:
    app = SlowEvents()
    async with loopback.post(app, {}, "/v1/x", {"x": 1}) as response:
        async for _ in response.events():
            break
    await asyncio.wait_for(app.disconnected.wait(), timeout=1)
    assert app.sent < 3
