"""ASGI middleware lcrag puts in front of vLLM's app.

- `ApiKeyMiddleware`: with an API key set, every route except /health needs `Authorization: Bearer <key>`,
  WebSockets and OPTIONS requests included (vLLM's own check covers only /v1, /v2 and /inference).
- `LcragOptionsMiddleware`: takes the `lcrag` field out of chat/completion request bodies and validates it
  before vLLM sees the request (vLLM would log and ignore an unknown top-level field). With a collection
  (in the field or a `docs@rag` model name) it replaces the messages with the mode's prompt and adds the
  `lcrag` field to the response. In `auto` mode it first runs the RAG attempt through the app behind it
  (in-process, `server.loopback`). The parsed options are left in `request.state.lcrag`.

Both are plain ASGI classes, not `BaseHTTPMiddleware`, so streamed responses pass through untouched.
"""

from __future__ import annotations

import json
import secrets
import time
from functools import partial
from typing import Any

from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from compression import registry
from compression.spec import KVSpec
from rag.context import Message as ChatMessage
from rag.context import prompt_token_ids
from rag.errors import RagError
from server import loopback
from server.augment import ResponseExtras, augmenting_send
from server.auto import prepare_auto
from server.errors import (
    ApiError,
    AuthenticationError,
    BadRequestError,
    NotImplementedYetError,
    from_rag_error,
    send_error,
    validation_error,
)
from server.modes import MODEL_NAME_SEPARATOR, PreparedPrompt, apply_model_name, prepare
from server.schemas import LcragOptions
from server.services import Services

OPEN_PATHS = frozenset({"/health"})
CHAT_PATH = "/v1/chat/completions"
GENERATION_PATHS = frozenset({CHAT_PATH, "/v1/completions"})
LCRAG_FIELD = "lcrag"
ATTEMPT_DROPPED_FIELDS = frozenset(
    {"stream_options", "max_completion_tokens", "n", "logprobs", "top_logprobs", "response_format", "tools"}
)


class ApiKeyMiddleware:
    """Rejects requests without the right bearer token with a 401 in OpenAI's error shape."""

    def __init__(self, app: ASGIApp, api_key: str) -> None:
        self.app = app
        self.expected = f"Bearer {api_key}".encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or self._allowed(scope):
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":  # refused before the handshake completes: the client sees a 403
            await send({"type": "websocket.close", "code": 1008, "reason": "missing or wrong API key"})
            return
        error = AuthenticationError(
            "Missing or wrong API key: send the header 'Authorization: Bearer <key>' "
            "with the key the server was started with (--api-key-file / LCRAG_API_KEY).",
        )
        await send_error(error, scope, receive, send)

    def _allowed(self, scope: Scope) -> bool:
        headers = Headers(scope=scope)
        if scope["path"] in OPEN_PATHS or is_cors_preflight(scope, headers):
            return True
        return secrets.compare_digest(headers.get("authorization", "").encode(), self.expected)


def is_cors_preflight(scope: Scope, headers: Headers) -> bool:
    """A browser's CORS preflight: it never carries credentials, and vLLM's CORS middleware answers it
    without reaching a handler. Any other OPTIONS request needs the key like every other method."""
    preflight_headers = "origin" in headers and "access-control-request-method" in headers
    return scope.get("method") == "OPTIONS" and preflight_headers


class LcragOptionsMiddleware:
    """Validates and removes the `lcrag` request field on the generation routes; runs the chat modes."""

    def __init__(self, app: ASGIApp, services: Services | None = None) -> None:
        self.app = app
        self.services = services

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] not in GENERATION_PATHS:
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        body = await _read_body(receive)
        payload = _json_object(body)
        if payload is None or not _concerns_lcrag(payload, self.services):
            # Not ours to judge: vLLM answers malformed bodies with its own 400.
            await self.app(scope, loopback.replay_body(body, receive), send)
            return
        try:
            options, prepared, kv = await self._prepare(scope, payload)
        except ApiError as error:
            await send_error(error, scope, receive, send)
            return
        except RagError as error:
            await send_error(from_rag_error(error, param=f"{LCRAG_FIELD}.collection"), scope, receive, send)
            return
        scope.setdefault("state", {})["lcrag"] = options
        if prepared is not None:
            payload["messages"] = prepared.messages
        if kv is not None:
            try:
                xargs = await self._kv_extra_args(kv, prepared, payload)
            except ApiError as error:
                await send_error(error, scope, receive, send)
                return
            payload["vllm_xargs"] = {**(payload.get("vllm_xargs") or {}), **xargs}
        if prepared is not None or kv is not None:
            extras = ResponseExtras(prepared, kv, started, self.services, options)
            send = augmenting_send(send, extras, stream=payload.get("stream") is True)
        new_body = json.dumps(payload).encode()
        scope = _with_content_length(scope, len(new_body))
        await self.app(scope, loopback.replay_body(new_body, receive), send)

    async def _prepare(
        self, scope: Scope, payload: dict[str, Any]
    ) -> tuple[LcragOptions, PreparedPrompt | None, KVSpec | None]:
        path = scope["path"]
        options = parse_lcrag_options(payload.pop(LCRAG_FIELD, {}))
        if self.services is not None:
            options = apply_model_name(payload, options, self.services.served_model)
        kv = self._eviction(options)
        if options.collection is None:
            return options, None, kv
        if path != CHAT_PATH:
            raise BadRequestError(
                f"'{LCRAG_FIELD}.collection' works with {CHAT_PATH}; send the question as chat messages.",
                param=f"{LCRAG_FIELD}.collection",
            )
        if self.services is None:
            raise NotImplementedYetError("This server has no collections.", param=f"{LCRAG_FIELD}.collection")
        max_tokens = payload.get("max_completion_tokens") or payload.get("max_tokens")
        max_tokens = max_tokens if isinstance(max_tokens, int) else None
        if options.mode == "auto":
            generate = partial(self._generate, scope, payload)
            prepared = await prepare_auto(
                self.services, options, payload.get("messages"), max_tokens, generate
            )
        else:
            prepared = await run_in_threadpool(
                prepare, self.services, options, payload.get("messages"), max_tokens
            )
        return options, prepared, kv

    def _eviction(self, options: LcragOptions) -> KVSpec | None:
        """The request's KV eviction (its own, else the server default), None when it evicts nothing."""
        kv = options.kv
        if kv is None and self.services is not None:
            kv = self.services.default_kv
        if kv is None or not kv.evicts:
            return None
        if self.services is None or self.services.kv_stats is None:
            raise NotImplementedYetError(
                f"'{LCRAG_FIELD}.kv': KV-cache eviction is not loaded in this server; start it with "
                "`lcrag serve --kv-eviction` (CPU), or use policy 'none' or ratio 0.",
                param=f"{LCRAG_FIELD}.kv",
            )
        return kv

    async def _kv_extra_args(
        self, kv: KVSpec, prepared: PreparedPrompt | None, payload: dict[str, Any]
    ) -> dict[str, Any]:
        """Eviction of this request's prompt; for an LC prompt with a query-agnostic policy, of its
        collection's context as a shared cache instead. A policy scored by reconstruction passes gets them
        run first, over the context (unless its cache is resident) or over the whole prompt."""
        caches = self.services.context_caches if self.services is not None else None
        model = str(payload["model"]) if payload.get("model") else None
        context = prepared.context_ids if prepared is not None else None
        if caches is None:
            return kv_extra_args(kv)
        if context is not None and prepared is not None and kv.shares_context:
            await caches.prepare(context, kv, model)
            return kv.task(len(context), prepared.collection).extra_args()
        if kv.policy_object.needs_reconstruction:
            await caches.prepare(whole_prompt_ids(caches.tokenizer, payload, kv.policy), kv, model)
        return kv_extra_args(kv)

    async def _generate(
        self, scope: Scope, payload: dict[str, Any], messages: list[ChatMessage], max_tokens: int
    ) -> str | None:
        """One short non-streamed chat completion by the app behind this middleware (auto's RAG attempt)."""
        request = {key: value for key, value in payload.items() if key not in ATTEMPT_DROPPED_FIELDS}
        request |= {"messages": messages, "max_tokens": max_tokens, "temperature": 0.0, "stream": False}
        async with loopback.post(self.app, scope, CHAT_PATH, request) as response:
            body = await response.read()
        if response.status != 200:
            return None
        return json.loads(body)["choices"][0]["message"].get("content") or ""


def _concerns_lcrag(payload: dict[str, Any], services: Services | None) -> bool:
    return (
        LCRAG_FIELD in payload
        or MODEL_NAME_SEPARATOR in str(payload.get("model", ""))
        or (services is not None and services.default_kv is not None)
    )


def parse_lcrag_options(raw: Any) -> LcragOptions:
    """Validate the `lcrag` field; raise a 400 naming the bad field, or a 501 for what is not built yet."""
    try:
        options = LcragOptions.model_validate(raw)
    except ValidationError as error:
        raise validation_error(error, LCRAG_FIELD) from None
    if options.kv is not None:
        try:
            policy = options.kv.policy_object
        except registry.PolicyError as error:
            raise BadRequestError(f"Invalid '{LCRAG_FIELD}.kv': {error}", param=f"{LCRAG_FIELD}.kv") from None
        if options.kv.cache and not policy.query_agnostic:
            raise BadRequestError(
                f"Invalid '{LCRAG_FIELD}.kv.cache': policy {policy.name!r} scores with the question, so one "
                "compressed context cannot serve other questions; use a query-agnostic policy (GET "
                "/v1/kv/policies) or leave 'cache' out.",
                param=f"{LCRAG_FIELD}.kv.cache",
            )
    return options


def whole_prompt_ids(tokenizer: Any, payload: dict[str, Any], policy: str) -> list[int]:
    """The chat request's prompt tokens as vLLM renders them, for reconstruction passes over all of it; a 400
    for a request lcrag cannot render (not chat, or messages that are not plain text)."""
    messages = payload.get("messages")
    if not isinstance(messages, list) or not all(
        isinstance(m, dict) and isinstance(m.get("content"), str) for m in messages
    ):
        raise BadRequestError(
            f"KV policy {policy!r} scores the prompt with reconstruction passes, which lcrag runs for "
            f"{CHAT_PATH} requests whose messages are plain text; send it that way, or use another policy "
            "(GET /v1/kv/policies).",
            param=f"{LCRAG_FIELD}.kv.policy",
        )
    return prompt_token_ids(tokenizer, messages)


def kv_extra_args(kv: KVSpec) -> dict[str, Any]:
    """The `vllm_xargs` entries that carry the request's eviction to the engine."""
    return kv.task().extra_args()


async def _read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def _json_object(body: bytes) -> dict[str, Any] | None:
    try:
        payload = json.loads(body)
    except ValueError:
        return None
    return payload if isinstance(payload, dict) else None


def _with_content_length(scope: Scope, length: int) -> Scope:
    headers = [(name, value) for name, value in scope["headers"] if name.lower() != b"content-length"]
    headers.append((b"content-length", str(length).encode()))
    return {**scope, "headers": headers}
