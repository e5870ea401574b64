"""Browser access to /ui with an API key: a login form once, then a cookie; nothing else changes."""

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from lcrag.settings import load_settings
from server.app import extend_app
from server.ui_access import COOKIE, LOGIN_PATH

HTML = {"accept": "text/html,application/xhtml+xml"}


@pytest.fixture
def client() -> TestClient:
    """A stand-in app with a page under /ui and an API route, extended with key `s3cret`."""
    app = FastAPI()

    @app.get("/ui/")
    @app.post("/ui/gradio_api/queue/join")
    def page() -> dict[str, str]:
        return {"page": "ui"}

    @app.get("/v1/thing")
    def thing() -> dict[str, str]:
        return {"page": "api"}

    return TestClient(extend_app(app, load_settings(api_key="s3cret")), follow_redirects=False)


def test_a_browser_without_the_cookie_is_sent_to_the_login_form(client: TestClient) -> None:
    response = client.get("/ui/", headers=HTML)
    assert response.status_code == 303 and response.headers["location"] == LOGIN_PATH
    form = client.get(LOGIN_PATH, headers=HTML)
    assert form.status_code == 200 and 'name="key"' in form.text and 'type="password"' in form.text


def test_ui_calls_without_the_cookie_are_refused_in_openai_shape(client: TestClient) -> None:
    response = client.post("/ui/gradio_api/queue/join", json={})
    assert response.status_code == 401 and response.json()["error"]["type"] == "AuthenticationError"


def test_the_right_key_sets_an_http_only_cookie_that_opens_the_ui(client: TestClient) -> None:
    response = client.post(LOGIN_PATH, data={"key": "s3cret"})
    assert response.status_code == 303 and response.headers["location"] == "/ui/"
    cookie = response.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/ui" in cookie
    assert "Max-Age=43200" in cookie
    assert "s3cret" not in cookie  # a token derived from the key, not the key
    client.cookies.set(COOKIE, response.cookies[COOKIE])
    assert client.get("/ui/", headers=HTML).json() == {"page": "ui"}
    assert client.post("/ui/gradio_api/queue/join", json={}).status_code == 200


def test_a_wrong_key_shows_the_form_again_with_a_message(client: TestClient) -> None:
    response = client.post(LOGIN_PATH, data={"key": "guess"})
    assert (
        response.status_code == 401 and "Wrong API key." in response.text and COOKIE not in response.cookies
    )


def test_the_cookie_opens_nothing_outside_the_ui(client: TestClient) -> None:
    token = client.post(LOGIN_PATH, data={"key": "s3cret"}).cookies[COOKIE]
    client.cookies.set(COOKIE, token)  # path "/": sent everywhere, honoured only under /ui
    assert client.get("/v1/thing").status_code == 401
    assert client.get("/v1/thing", headers={"Authorization": "Bearer s3cret"}).status_code == 200


def test_api_clients_reach_the_ui_with_the_bearer_header(client: TestClient) -> None:
    ok = client.post("/ui/gradio_api/queue/join", json={}, headers={"Authorization": "Bearer s3cret"})
    wrong = client.post("/ui/gradio_api/queue/join", json={}, headers={"Authorization": "Bearer nope"})
    assert (ok.status_code, wrong.status_code) == (200, 401)


def test_the_cookie_stops_opening_the_ui_when_its_session_ends() -> None:
    from server.ui_access import UI_SESSION_S, UiLoginMiddleware

    now = [1_000_000.0]
    app = FastAPI()

    @app.post("/ui/gradio_api/queue/join")
    def join() -> dict[str, str]:
        return {"page": "ui"}

    wrapped = UiLoginMiddleware(
        extend_app(app, load_settings(api_key="s3cret")), "s3cret", clock=lambda: now[0]
    )
    client = TestClient(wrapped, follow_redirects=False)
    token = client.post(LOGIN_PATH, data={"key": "s3cret"}).cookies[COOKIE]
    client.cookies.clear()
    client.cookies.set(COOKIE, token)
    now[0] += UI_SESSION_S - 60
    assert client.post("/ui/gradio_api/queue/join", json={}).status_code == 200
    now[0] += 120
    assert client.post("/ui/gradio_api/queue/join", json={}).status_code == 401
    forged = str(int(now[0])) + token[token.index(".") :]
    client.cookies.clear()
    client.cookies.set(COOKIE, forged)  # a fresh time with the old signature
    assert client.post("/ui/gradio_api/queue/join", json={}).status_code == 401
