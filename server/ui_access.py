"""Browser access to /ui on a server with an API key: the key is typed once into a login form at
/ui/login and kept in an HttpOnly, SameSite=Strict cookie. The cookie holds when it was issued and an HMAC
of that time under the key (never the key itself); it opens the UI for `UI_SESSION_S` (12 hours), checked
by the server, and then the form asks again. Changing the key ends every session.

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
import time
from collections.abc import Callable
from urllib.parse import parse_qs

from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

UI_PREFIX = "/ui"
LOGIN_PATH = "/ui/login"
COOKIE = "lcrag_ui"
UI_SESSION_S = 12 * 3600
LOGIN_PAGE = """<!doctype html>
<html><head><title>lcrag: sign in</title><meta name="viewport" content="width=device-width"></head>
<body style="font-family: system-ui, sans-serif; max-width: 28em; margin: 4em auto">
<h2>lcrag</h2><p>This server needs its API key (<code>--api-key</code> / <code>LCRAG_API_KEY</code>).</p>
<form method="post" action="/ui/login">
<label>API key <input id="key" name="key" type="password" autofocus required></label>
<button id="sign-in" type="submit">Open the UI</button></form>
<p id="login-error" style="color: #b00">{error}</p></body></html>"""


def ui_token(api_key: str, issued: int) -> str:
    """The cookie value for a session issued at `issued` (unix seconds): `<issued>.<HMAC under the key>`."""
    digest = hmac.new(api_key.encode(), f"lcrag-ui-cookie:{issued}".encode(), hashlib.sha256).hexdigest()
    return f"{issued}.{digest}"


class UiLoginMiddleware:
    """Login form and cookie for /ui, in front of the API key check (see the module docstring)."""

    def __init__(
        self,
        app: ASGIApp,
        api_key: str,
        session_s: int = UI_SESSION_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.app = app
        self.api_key = api_key
        self.session_s = session_s
        self.clock = clock

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        in_ui = path == UI_PREFIX or path.startswith(UI_PREFIX + "/")
        if scope["type"] not in ("http", "websocket") or not in_ui:
            await self.app(scope, receive, send)
            return
        if path == LOGIN_PATH and scope["type"] == "http":
            await (await self._login(Request(scope, receive)))(scope, receive, send)
            return
        headers = Headers(scope=scope)
        if "authorization" not in headers:
            if self._has_cookie(headers):
                bearer = (b"authorization", f"Bearer {self.api_key}".encode())
                scope = {**scope, "headers": [*scope["headers"], bearer]}
            elif scope.get("method") == "GET" and "text/html" in headers.get("accept", ""):
                await RedirectResponse(LOGIN_PATH, status_code=303)(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def _has_cookie(self, headers: Headers) -> bool:
        """A cookie this key issued less than `session_s` ago."""
        given = Request({"type": "http", "headers": headers.raw}).cookies.get(COOKIE, "")
        issued, _, _ = given.partition(".")
        if not issued.isdigit() or not 0 <= self.clock() - int(issued) < self.session_s:
            return False
        return secrets.compare_digest(given, ui_token(self.api_key, int(issued)))

    async def _login(self, request: Request) -> Response:
        if request.method != "POST":
            return HTMLResponse(LOGIN_PAGE.format(error=""))
        form = parse_qs((await request.body()).decode(errors="replace"))
        key = (form.get("key") or [""])[0]
        if not hmac.compare_digest(key.encode(), self.api_key.encode()):
            return HTMLResponse(LOGIN_PAGE.format(error=html.escape("Wrong API key.")), status_code=401)
        response = RedirectResponse(UI_PREFIX + "/", status_code=303)
        token = ui_token(self.api_key, int(self.clock()))
        response.set_cookie(
            COOKIE, token, max_age=self.session_s, path=UI_PREFIX, httponly=True, samesite="strict"
        )
        return response
