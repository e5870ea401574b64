"""The `lcrag` request field and the API key check, on a small echo app standing in for vLLM's."""

from typing import Any

import pytest
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient

from lcrag.settings import load_settings
from server.app import extend_app

CHAT = "/v1/chat/completions"


def echo_app(api_key: str | None = None) -> TestClient:
    app = FastAPI()

    @app.post(CHAT)
    @app.post("/v1/completions")
    @app.post("/tokenize")
    async def echo(request: Request) -> dict[str, Any]:
        options = getattr(request.state, "lcrag", None)
        return {
            "body": await request.json(),
            "content_length": int(request.headers["content-length"]),
            "raw_length": len(await request.body()),
            "lcrag": options.model_dump() if options else None,
        }

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    return TestClient(extend_app(app, load_settings(api_key=api_key)))


def test_lcrag_field_is_validated_removed_and_handed_to_handlers() -> None:
    body = {"model": "m", "messages": [], "lcrag": {"kv": {"policy": "none", "ratio": 0.0}}}
    reply = echo_app().post(CHAT, json=body).json()
    assert "lcrag" not in reply["body"] and reply["body"]["model"] == "m"
    assert reply["content_length"] == reply["raw_length"]
    unset = {"window": None, "sinks": None, "options": None, "cache": None, "retention": None}
    assert reply["lcrag"]["kv"] == {"policy": "none", "ratio": 0.0, **unset}


def test_requests_without_lcrag_pass_through_byte_for_byte() -> None:
    raw = b'{"model":  "m", "prompt": "hi"}'
    reply = (
        echo_app().post("/v1/completions", content=raw, headers={"content-type": "application/json"}).json()
    )
    assert reply["raw_length"] == len(raw) and reply["lcrag"] is None


def test_lcrag_on_other_routes_is_left_alone() -> None:
    reply = echo_app().post("/tokenize", json={"prompt": "x", "lcrag": {"bogus": 1}}).json()
    assert reply["body"]["lcrag"] == {"bogus": 1}


@pytest.mark.parametrize(
    ("lcrag", "param", "phrase"),
    [
        ({"kv": {"ratio": 1.5}}, "lcrag.kv.ratio", "less than 1"),
        ({"kv": {"ratio": "lots"}}, "lcrag.kv.ratio", "valid number"),
        ({"mode": "fast"}, "lcrag.mode", "'rag', 'lc' or 'auto'"),
        ({"colection": "docs"}, "lcrag.colection", "Extra inputs are not permitted"),
        ({"kv": {"policy": "none", "windw": 8}}, "lcrag.kv.windw", "Extra inputs are not permitted"),
        ("snapkv", "lcrag", "valid dictionary"),
    ],
)
def test_bad_lcrag_field_is_a_400_naming_the_field(lcrag: object, param: str, phrase: str) -> None:
    response = echo_app().post(CHAT, json={"model": "m", "messages": [], "lcrag": lcrag})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == param and error["type"] == "BadRequestError" and error["code"] == 400
    assert param in error["message"] and phrase in error["message"]


@pytest.mark.parametrize(
    ("lcrag", "param"),
    [({"collection": "docs"}, "lcrag.collection"), ({"kv": {"policy": "snapkv", "ratio": 0.5}}, "lcrag.kv")],
)
def test_features_not_built_yet_answer_501_instead_of_being_ignored(lcrag: object, param: str) -> None:
    response = echo_app().post(CHAT, json={"model": "m", "messages": [], "lcrag": lcrag})
    assert response.status_code == 501
    assert response.json()["error"]["param"] == param


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


@pytest.mark.parametrize(
    ("kv", "phrase"),
    [
        ({"policy": "snap", "ratio": 0.5}, "Unknown KV policy 'snap'; available:"),
        ({"policy": "knorm", "ratio": 0.5, "window": 8}, "has no option window"),
    ],
)
def test_unknown_kv_policy_or_option_is_a_400_listing_what_exists(kv: dict, phrase: str) -> None:
    response = echo_app().post(CHAT, json={"model": "m", "messages": [], "lcrag": {"kv": kv}})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "lcrag.kv" and phrase in response.json()["error"]["message"]


def test_kv_policies_are_listed() -> None:
    body = echo_app().get("/v1/kv/policies").json()
    assert {p["name"] for p in body["data"]} >= {"none", "snapkv", "streaming_llm", "knorm", "h2o", "tova"}
