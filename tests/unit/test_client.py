"""`lcrag.client` against a fake server: the API key goes out, SSE events come back parsed, and a refusal or
no answer at all is one `ApiFailure`."""

import json

import httpx
import pytest

from lcrag.client import (
    ApiFailure,
    LcragClient,
    call,
    chat_events,
    connect,
    delta_text,
    kv_bytes_per_token,
    served_model,
)

CHUNKS = [
    {"choices": [{"delta": {"content": "Pear"}}]},
    {"choices": [{"delta": {"content": " cider"}}], "lcrag": {"prompt_tokens": 42}},
    {"choices": [], "usage": {"prompt_tokens": 42}},
]


def fake_server(seen: list[httpx.Request]) -> httpx.MockTransport:
    def respond(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.headers.get("Authorization") != "Bearer secret":
            return httpx.Response(401, json={"error": {"message": "Missing or wrong API key."}})
        if request.url.path == "/v1/chat/completions":
            events = [*(f"data: {json.dumps(chunk)}" for chunk in CHUNKS), ": ping", "data: [DONE]"]
            stream = "".join(f"{event}\n\n" for event in events)
            return httpx.Response(200, text=stream, headers={"content-type": "text/event-stream"})
        if request.url.path == "/v1/models":
            return httpx.Response(200, json={"data": [{"id": "tiny"}, {"id": "docs@lc"}]})
        if request.url.path == "/v1/kv/caches":
            return httpx.Response(501, json={"error": {"message": "KV eviction is off."}})
        return httpx.Response(404, text="no such route")

    return httpx.MockTransport(respond)


def client(api_key: str | None, seen: list[httpx.Request]) -> httpx.Client:
    return connect("http://lcrag", api_key, transport=fake_server(seen))


def test_events_come_parsed_with_the_api_key_sent() -> None:
    seen: list[httpx.Request] = []
    chunks = list(chat_events(client("secret", seen), {"model": "docs@lc", "messages": []}))
    assert chunks == CHUNKS
    assert "".join(delta_text(chunk) for chunk in chunks) == "Pear cider"
    assert json.loads(seen[0].content)["stream"] is True
    assert served_model(client("secret", seen)) == "tiny"
    assert kv_bytes_per_token(client("secret", seen)) is None  # 501: no KV eviction, not an error


def test_refusals_and_silence_are_api_failures() -> None:
    with pytest.raises(ApiFailure, match="wrong API key") as refused:
        list(chat_events(client("wrong", []), {"messages": []}))
    assert refused.value.status == 401
    with pytest.raises(ApiFailure, match="no such route") as missing:
        call(client("secret", []), "GET", "/v1/nothing")
    assert missing.value.status == 404
    with pytest.raises(ApiFailure, match="did not answer") as silent:
        LcragClient("http://127.0.0.1:9", timeout=2).collections()
    assert silent.value.status is None
