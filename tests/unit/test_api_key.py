"""The API key check, on a small echo app standing in for vLLM's."""

from typing import Any

import pytest
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient

from lcrag.settings import load_settings
from server.app import extend_app

CHAT = "/v1/chat/completions"


def echo_app(api_key: str | None = None) -> TestClient:
    app = FastAPI()

    @app.post("/tokenize")
    async def echo(request: Request) -> dict[str, Any]:
        return {"body": await request.json()}

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    return TestClient(extend_app(app, load_settings(api_key=api_key)))


def test_without_an_api_key_everything_is_open() -> None:
    assert echo_app().post("/tokenize", json={"prompt": "x"}).status_code == 200


@pytest.mark.parametrize("path", [CHAT, "/tokenize", "/docs", "/metrics", "/anything"])
@pytest.mark.parametrize("header", [None, "Bearer wrong", "test-key", "Basic test-key"])
def test_with_an_api_key_every_route_but_health_needs_the_bearer_token(path: str, header: str | None) -> None:
    headers = {"Authorization": header} if header else {}
    response = echo_app(api_key="test-key").post(path, json={}, headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.json()["error"]["type"] == "AuthenticationError"


def test_right_key_passes_and_health_is_open() -> None:
    client = echo_app(api_key="test-key")
    ok = client.post("/tokenize", json={"prompt": "x"}, headers={"Authorization": "Bearer test-key"})
    assert ok.status_code == 200
    assert client.get("/health").status_code == 200


def test_kv_policies_are_listed() -> None:
    body = echo_app().get("/v1/kv/policies").json()
    assert {p["name"] for p in body["data"]} >= {"none", "snapkv", "streaming_llm", "knorm", "h2o", "tova"}
