"""SIGTERM with requests in flight: the server exits 0 within 10 s and every client gets a clean 503."""

from __future__ import annotations

import json
import re
import signal
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import requests_running, start_server, stop_server, wait_until

pytestmark = pytest.mark.integration

LONG = {"max_tokens": 1700, "ignore_eos": True}  # ~10 s of tiny-model decoding: running at the signal


def test_sigterm_ends_in_flight_requests_with_a_503_and_exits_0_within_10s(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    args = ["--model", str(tiny_model_dir), "--max-model-len", "2048", "--data-dir", str(tmp_path)]
    process, server = start_server(tmp_path, args, model=tiny_model_dir.name)
    try:
        with httpx.Client(base_url=server.base_url, timeout=60) as client:
            assert client.post("/v1/collections", json={"name": "ferry"}).status_code == 201
            text = ("The ferry leaves at nine. " * 30).encode()
            files = [("files", ("ferry.txt", text, "text/plain"))]
            assert client.post("/v1/collections/ferry/documents", files=files).status_code == 200
        chat = {"model": server.model, "messages": [{"role": "user", "content": "Hello"}], **LONG}
        requests: dict[str, tuple[str, dict[str, Any]]] = {
            "chat": ("/v1/chat/completions", chat),
            "lc": ("/v1/chat/completions", {**chat, "model": "ferry@lc"}),
            "compare": ("/v1/compare", {"question": "When?", "collection": "ferry", "max_tokens": 1500}),
        }
        replies: dict[str, object] = {}
        streaming = threading.Event()
        threads = [
            threading.Thread(target=_post, args=(server.base_url, path, body, replies, name))
            for name, (path, body) in requests.items()
        ]
        threads.append(
            threading.Thread(
                target=_stream, args=(server.base_url, {**chat, "stream": True}, replies, streaming)
            )
        )
        for thread in threads:
            thread.start()
        assert streaming.wait(60), "the stream never started"
        # chat, lc, the stream and compare's two modes: every engine request is generating
        wait_until(lambda: requests_running(server.base_url) >= 5, 60, "5 requests running in the engine")
        signalled = time.monotonic()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
        assert time.monotonic() - signalled < 10
        for thread in threads:
            thread.join(timeout=10)
    finally:
        if process.poll() is None:
            stop_server(process)
    for name in requests:
        status, body = replies[name]  # type: ignore[misc]
        assert status == 503, (name, body)
        assert body["error"]["type"] == "ServiceUnavailableError"
        assert "shutting down" in body["error"]["message"]
    status, events = replies["stream"]  # type: ignore[misc]
    assert status == 200 and events[-1] == "[DONE]"
    assert "shutting down" in json.loads(events[-2])["error"]["message"]
    assert all("choices" in json.loads(event) for event in events[:-2])  # answer tokens up to the stop
    log = server.log_path.read_text()
    assert "Traceback" not in log and re.search(r"shutting down: stopping [4-9] request\(s\) in flight", log)


def _post(base_url: str, path: str, body: dict[str, Any], replies: dict[str, object], name: str) -> None:
    reply = httpx.post(f"{base_url}{path}", json=body, timeout=120)
    replies[name] = (reply.status_code, reply.json())


def _stream(
    base_url: str, body: dict[str, Any], replies: dict[str, object], started: threading.Event
) -> None:
    events = []
    with httpx.stream("POST", f"{base_url}/v1/chat/completions", json=body, timeout=120) as reply:
        for line in reply.iter_lines():
            if line.startswith("data: "):
                events.append(line.removeprefix("data: "))
                started.set()
    replies["stream"] = (reply.status_code, events)
