"""The request body limit: a declared or streamed body over LCRAG_MAX_REQUEST_MB is a 413 and the handler
never gets the whole body."""

from collections.abc import Iterator

from fastapi import FastAPI, Request
from fastapi.testclient import TestClient

from lcrag.settings import load_settings
from server.app import extend_app

LIMIT_MB = 1


def limited_app(received: list[int]) -> TestClient:
    app = FastAPI()

    @app.post("/upload")
    async def upload(request: Request) -> dict[str, int]:
        body = await request.body()
        received.append(len(body))  # only a body the limit let through gets here
        return {"bytes": len(body)}

    return TestClient(extend_app(app, load_settings(max_request_mb=LIMIT_MB)))


def chunks(total: int, size: int = 64_000) -> Iterator[bytes]:
    for start in range(0, total, size):
        yield b"x" * min(size, total - start)


def test_a_body_under_the_limit_passes_whole() -> None:
    received: list[int] = []
    reply = limited_app(received).post("/upload", content=b"x" * 900_000)
    assert reply.status_code == 200 and received == [900_000]


def test_a_declared_length_over_the_limit_is_refused_before_reading() -> None:
    received: list[int] = []
    reply = limited_app(received).post("/upload", content=b"x" * 1_000_001)
    assert reply.status_code == 413 and received == []
    error = reply.json()["error"]
    assert error["type"] == "PayloadTooLargeError" and "1 MB limit (LCRAG_MAX_REQUEST_MB)" in error["message"]


def test_a_chunked_body_is_stopped_at_the_limit() -> None:
    received: list[int] = []
    reply = limited_app(received).post("/upload", content=chunks(5_000_000))  # no Content-Length
    assert reply.status_code == 413 and received == []
    assert "LCRAG_MAX_REQUEST_MB" in reply.json()["error"]["message"]
