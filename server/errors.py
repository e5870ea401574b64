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

from rag.errors import (
    CollectionExistsError,
    CollectionNotFoundError,
    ContextTooLongError,
    DocumentNotFoundError,
    InvalidCollectionNameError,
    InvalidDocumentNameError,
    RagError,
    UnreadableDocumentError,
    UnsupportedDocumentError,
)


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


class ForbiddenError(ApiError):
    status = HTTPStatus.FORBIDDEN
    kind = "ForbiddenError"


class NotFoundError(ApiError):
    status = HTTPStatus.NOT_FOUND
    kind = "NotFoundError"


class ConflictError(ApiError):
    status = HTTPStatus.CONFLICT
    kind = "ConflictError"


class PayloadTooLargeError(ApiError):
    status = HTTPStatus.REQUEST_ENTITY_TOO_LARGE
    kind = "PayloadTooLargeError"


class UnsupportedMediaTypeError(ApiError):
    status = HTTPStatus.UNSUPPORTED_MEDIA_TYPE
    kind = "UnsupportedMediaTypeError"


class UnprocessableEntityError(ApiError):
    status = HTTPStatus.UNPROCESSABLE_ENTITY
    kind = "UnprocessableEntityError"


class NotImplementedYetError(ApiError):
    status = HTTPStatus.NOT_IMPLEMENTED
    kind = "NotImplementedError"


class ServiceUnavailableError(ApiError):
    status = HTTPStatus.SERVICE_UNAVAILABLE
    kind = "ServiceUnavailableError"


RAG_ERRORS: dict[type[RagError], type[ApiError]] = {
    InvalidCollectionNameError: BadRequestError,
    InvalidDocumentNameError: BadRequestError,
    CollectionNotFoundError: NotFoundError,
    DocumentNotFoundError: NotFoundError,
    CollectionExistsError: ConflictError,
    UnsupportedDocumentError: UnsupportedMediaTypeError,
    UnreadableDocumentError: UnprocessableEntityError,
    ContextTooLongError: BadRequestError,
}


def from_rag_error(error: RagError, param: str | None = None) -> ApiError:
    """The HTTP error a RAG-layer error stands for (one table, above)."""
    for rag_type, api_type in RAG_ERRORS.items():
        if isinstance(error, rag_type):
            return api_type(str(error), param=param)
    return BadRequestError(str(error), param=param)


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
