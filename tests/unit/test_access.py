"""Access checks beyond plain HTTP: WebSockets and OPTIONS need the key, and state-changing requests from
another site's pages are refused unless --allowed-origins lists the site."""

import pytest
from fastapi import FastAPI, WebSocket
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from lcrag.settings import load_settings
from server.app import extend_app

KEY = {"Authorization": "Bearer s3cret"}
TESTCLIENT_ORIGIN = "http://testserver"  # TestClient's Host header: the server's own pages


def stand_in(api_key: str | None = "s3cret", allowed_origins: tuple[str, ...] = ()) -> TestClient:
    app = FastAPI()
    changed: list[str] = []

    @app.post("/v1/collections")
    def create() -> dict[str, int]:
        changed.append("created")
        return {"changed": len(changed)}

    @app.api_route("/v1/things", methods=["OPTIONS"])
    def options() -> dict[str, str]:
        return {"listing": "secret"}

    @app.websocket("/v1/realtime")
    async def realtime(socket: WebSocket) -> None:
        await socket.accept()
        await socket.send_text("hello")
        await socket.close()

    client = TestClient(extend_app(app, load_settings(api_key=api_key), allowed_origins=allowed_origins))
    client.app_state_changes = changed  # type: ignore[attr-defined]
    return client


def test_a_websocket_without_the_key_is_refused_before_the_handshake() -> None:
    client = stand_in()
    with pytest.raises(WebSocketDisconnect) as refused, client.websocket_connect("/v1/realtime"):
        pass
    assert refused.value.code == 1008
    with client.websocket_connect("/v1/realtime", headers=KEY) as socket:
        assert socket.receive_text() == "hello"


def test_options_needs_the_key_unless_it_is_a_cors_preflight() -> None:
    client = stand_in()
    assert client.options("/v1/things").status_code == 401
    assert client.options("/v1/things", headers=KEY).json() == {"listing": "secret"}
    preflight = {"Origin": TESTCLIENT_ORIGIN, "Access-Control-Request-Method": "POST"}
    assert client.options("/v1/things", headers=preflight).status_code != 401


@pytest.mark.parametrize("api_key", [None, "s3cret"])
def test_a_foreign_page_cannot_change_state_even_with_a_simple_request(api_key: str | None) -> None:
    client = stand_in(api_key)
    headers = {**(KEY if api_key else {}), "Origin": "https://evil.example", "Content-Type": "text/plain"}
    refused = client.post("/v1/collections", content=b'{"name": "x"}', headers=headers)
    assert refused.status_code == 403
    error = refused.json()["error"]
    assert error["type"] == "ForbiddenError" and error["param"] == "Origin"
    assert """--allowed-origins '["https://evil.example"]'""" in error["message"]
    assert client.app_state_changes == []  # type: ignore[attr-defined]


def test_own_pages_listed_origins_and_non_browser_clients_pass() -> None:
    client = stand_in(allowed_origins=("https://mine.example",))
    for origin in (TESTCLIENT_ORIGIN, "https://mine.example", None):
        headers = {**KEY, **({"Origin": origin} if origin else {})}
        assert client.post("/v1/collections", json={}, headers=headers).status_code == 200
    assert client.post("/v1/collections", json={}, headers={**KEY, "Origin": "null"}).status_code == 403
    assert client.app_state_changes == ["created"] * 3  # type: ignore[attr-defined]


def test_a_websocket_from_a_foreign_page_is_refused() -> None:
    client = stand_in(api_key=None)
    with (
        pytest.raises(WebSocketDisconnect),
        client.websocket_connect("/v1/realtime", headers={"Origin": "https://evil.example"}),
    ):
        pass
