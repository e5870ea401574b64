"""Typed errors and the one JSON shape they take: the same `{"error": {...}}` body vLLM and OpenAI use.

Route handlers raise an `ApiError` subclass; middleware (which runs outside FastAPI's exception
handling) turns one into a response with `error_response`.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import ClassVar

from pydantic import ValidationError
from starlette.responses import JSONResponse
from starlette.types import Receive, Scope, Send


class ApiError(Exception):
    """An error meant for the client: a status, a message saying what to do, and the offending field."""

    status: ClassVar[HTTPStatus] = HTTPStatus.BAD_REQUEST
    kind: ClassVar[str] = "BadRequestError"

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param

    def body(self) -> dict[str, dict[str, object]]:
        return {
            "error": {
                "message": self.message,
                "type": self.kind,
                "param": self.param,
                "code": self.status.value,
            }
        }


class BadRequestError(ApiError):
    pass


class AuthenticationError(ApiError):
    status = HTTPStatus.UNAUTHORIZED
    kind = "AuthenticationError"


class NotFoundError(ApiError):
    status = HTTPStatus.NOT_FOUND
    kind = "NotFoundError"


class NotImplementedYetError(ApiError):
    status = HTTPStatus.NOT_IMPLEMENTED
    kind = "NotImplementedError"


def error_response(error: ApiError) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if isinstance(error, AuthenticationError) else None
    return JSONResponse(error.body(), status_code=error.status.value, headers=headers)


async def send_error(error: ApiError, scope: Scope, receive: Receive, send: Send) -> None:
    """Answer an ASGI request with `error` (for middleware)."""
    await error_response(error)(scope, receive, send)


def validation_error(error: ValidationError, prefix: str) -> BadRequestError:
    """A 400 naming each invalid field as a dotted path under `prefix` (e.g. 'lcrag.kv.ratio')."""
    problems = []
    for problem in error.errors():
        path = ".".join([prefix, *(str(part) for part in problem["loc"])])
        problems.append((path, problem["msg"]))
    message = "; ".join(f"{path}: {msg}" for path, msg in problems)
    return BadRequestError(f"Invalid {prefix!r} field: {message}", param=problems[0][0])
