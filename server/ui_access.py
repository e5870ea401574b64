"""Browser access to /ui on a server with an API key: the key is typed once into a login form at
/ui/login and kept in an HttpOnly, SameSite=Strict cookie (an HMAC of the key, not the key itself).

`UiLoginMiddleware` runs in front of `ApiKeyMiddleware`: for paths under /ui it serves the login form,
turns a valid cookie into the `Authorization` header the key check expects, and sends a browser without
one to the form. Requests with their own `Authorization` header (API clients, `gradio_client`) and all
other paths pass through untouched, so the key check stays in one place.
"""

from __future__ import annotations

import hashlib
import hmac
import html
import secrets
from urllib.parse import parse_qs

from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

UI_PREFIX = "/ui"
LOGIN_PATH = "/ui/login"
COOKIE = "lcrag_ui"
LOGIN_PAGE = """<!doctype html>
<html><head><title>lcrag: sign in</title><meta name="viewport" content="width=device-width"></head>
<body style="font-family: system-ui, sans-serif; max-width: 28em; margin: 4em auto">
<h2>lcrag</h2><p>This server needs its API key (<code>--api-key</code> / <code>LCRAG_API_KEY</code>).</p>
<form method="post" action="/ui/login">
<label>API key <input id="key" name="key" type="password" autofocus required></label>
<button id="sign-in" type="submit">Open the UI</button></form>
<p id="login-error" style="color: #b00">{error}</p></body></html>"""


def ui_token(api_key: str) -> str:
    """The cookie value: derived from the key, so the cookie never holds the key itself."""
    return hmac.new(api_key.encode(), b"lcrag-ui-cookie", hashlib.sha256).hexdigest()


class UiLoginMiddleware:
    """Login form and cookie for /ui, in front of the API key check (see the module docstring)."""

    def __init__(self, app: ASGIApp, api_key: str) -> None:
        self.app = app
        self.token = ui_token(api_key)
        self.api_key = api_key

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or not (path == UI_PREFIX or path.startswith(UI_PREFIX + "/")):
            await self.app(scope, receive, send)
            return
        if path == LOGIN_PATH:
            await (await self._login(Request(scope, receive)))(scope, receive, send)
            return
        headers = Headers(scope=scope)
        if "authorization" not in headers:
            if self._has_cookie(headers):
                bearer = (b"authorization", f"Bearer {self.api_key}".encode())
                scope = {**scope, "headers": [*scope["headers"], bearer]}
            elif scope["method"] == "GET" and "text/html" in headers.get("accept", ""):
                await RedirectResponse(LOGIN_PATH, status_code=303)(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def _has_cookie(self, headers: Headers) -> bool:
        cookies = Request({"type": "http", "headers": headers.raw}).cookies
        return secrets.compare_digest(cookies.get(COOKIE, ""), self.token)

    async def _login(self, request: Request) -> Response:
        if request.method != "POST":
            return HTMLResponse(LOGIN_PAGE.format(error=""))
        form = parse_qs((await request.body()).decode(errors="replace"))
        key = (form.get("key") or [""])[0]
        if not hmac.compare_digest(ui_token(key), self.token):
            return HTMLResponse(LOGIN_PAGE.format(error=html.escape("Wrong API key.")), status_code=401)
        response = RedirectResponse(UI_PREFIX + "/", status_code=303)
        response.set_cookie(COOKIE, self.token, path=UI_PREFIX, httponly=True, samesite="strict")
        return response
