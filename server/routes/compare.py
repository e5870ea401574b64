"""POST /v1/compare: one question, several modes at once on the one engine, each answer with its costs.

Each mode is an ordinary streamed `/v1/chat/completions` request with an `lcrag` field, sent to this same
app in-process (`server.loopback`): it takes every step a client's request takes (API key, `lcrag`
validation, retrieval or LC assembly, vLLM's handler, the response's `lcrag` field), so the numbers are
what a client gets, and vLLM batches the concurrent requests. Times are measured here from the moment the
compare request started, so they include each mode's share of the engine.

With `timing: "isolated"` the modes run one after another instead, each timed from its own start, so each
answer's cost is its own (concurrent modes share the engine's steps: a short RAG prompt prefilled beside a
long LC one starts as late as the LC answer). A mode that fails (LC over budget, KV eviction not available,
...) gives an error entry; the others still answer. JSON: `CompareResponse`. With `stream: true`,
server-sent events, each tagged with its mode: `{"mode", "type": "delta", "content"}` while answers
stream, `{"mode", "type": "result", "result"}` once per mode (a `ModeResult`), then `[DONE]`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from compression import registry
from compression.spec import KVSpec
from rag.errors import RagError
from server import loopback
from server.errors import BadRequestError, from_rag_error
from server.modes import parse_mode_spec
from server.schemas import CompareRequest, CompareResponse, ModeError, ModeResult
from server.services import Services

log = logging.getLogger("lcrag.server.compare")
router = APIRouter(tags=["compare"])
CHAT_PATH = "/v1/chat/completions"
OnDelta = Callable[[str], Awaitable[None]]


@dataclass(frozen=True)
class ModeRun:
    """One mode of a compare request: its spec as the client wrote it and the chat request it becomes."""

    spec: str
    chat: dict[str, Any]


@dataclass
class _Progress:
    """What one mode's stream has delivered so far."""

    started: float
    text: str = ""
    first_token_at: float | None = None
    lcrag: dict[str, Any] = field(default_factory=dict)
    usage: dict[str, Any] = field(default_factory=dict)


@router.post("/v1/compare", response_model=CompareResponse)
async def compare(body: CompareRequest, request: Request) -> Any:
    services: Services = request.app.state.lcrag
    runs = plan(body, services)
    try:
        await run_in_threadpool(services.store.require_collection, body.collection)
    except RagError as error:
        raise from_rag_error(error, param="collection") from None
    caller = Caller(request)
    model = body.model or services.served_model
    isolated = body.timing == "isolated"
    if body.stream:
        return StreamingResponse(stream_events(caller, runs, isolated), media_type="text/event-stream")
    if isolated:
        results = [await caller.run(run, time.perf_counter()) for run in runs]
    else:
        started = time.perf_counter()
        results = list(await asyncio.gather(*(caller.run(run, started) for run in runs)))
    return CompareResponse(question=body.question, collection=body.collection, model=model, results=results)


def plan(body: CompareRequest, services: Services) -> list[ModeRun]:
    """The chat request for each mode; a 400 naming the first bad or repeated mode."""
    runs = []
    for index, spec in enumerate(body.modes):
        param = f"modes.{index}"
        try:
            mode, kv = parse_mode_spec(spec)
        except ValueError as error:
            raise BadRequestError(f"Invalid '{param}': {error}", param=param) from None
        if kv is not None:
            _check_policy(kv, param)
        if spec in body.modes[:index]:
            raise BadRequestError(f"Invalid '{param}': mode {spec!r} is listed twice.", param=param)
        runs.append(ModeRun(spec, chat_request(body, mode, kv, services)))
    return runs


def chat_request(body: CompareRequest, mode: str, kv: KVSpec | None, services: Services) -> dict[str, Any]:
    lcrag: dict[str, Any] = {"collection": body.collection, "mode": mode}
    retention = body.retention and mode == "lc" and kv is not None and kv.evicts
    if mode != "lc" or retention:  # a retention view checks the passages rag would retrieve
        chosen = {"top_k": body.top_k, "retrieval": body.retrieval}
        lcrag.update({key: value for key, value in chosen.items() if value is not None})
    if kv is not None:
        lcrag["kv"] = {**kv.model_dump(exclude_none=True), **({"retention": True} if retention else {})}
    system = [{"role": "system", "content": body.system_prompt}] if body.system_prompt else []
    chat = {
        "model": body.model or services.served_model,
        "messages": [
            *system,
            *(turn.model_dump() for turn in body.history),
            {"role": "user", "content": body.question},
        ],
        "max_tokens": body.max_tokens or services.settings.answer_tokens,
        "temperature": body.temperature,
        "stream": True,
        "stream_options": {"include_usage": True},
        "lcrag": lcrag,
    }
    if body.repetition_penalty is not None:
        chat["repetition_penalty"] = body.repetition_penalty
    return chat


def _check_policy(kv: KVSpec, param: str) -> None:
    try:
        registry.create(kv.policy)
    except registry.PolicyError as error:
        raise BadRequestError(f"Invalid '{param}': {error}", param=param) from None


class Caller:
    """Runs chat requests against the app that received the compare request, as the same client."""

    def __init__(self, request: Request) -> None:
        self.app = request.app
        self.scope = request.scope
        auth = request.headers.get("authorization")
        self.headers = {"authorization": auth} if auth else {}

    async def run(self, run: ModeRun, started: float, on_delta: OnDelta | None = None) -> ModeResult:
        """Stream one mode's answer to the end; its result or its error entry, never an exception."""
        progress = _Progress(started)
        try:
            async with loopback.post(self.app, self.scope, CHAT_PATH, run.chat, self.headers) as response:
                if response.status != 200:
                    return _error_result(run.spec, response.status, await response.read())
                async for event in response.events():
                    if "error" in event or event.get("object") == "error":
                        return _error_result(run.spec, 500, json.dumps(event).encode())
                    await _absorb(event, progress, on_delta)
        except Exception as error:  # an entry for this mode; the other modes go on
            log.exception("compare: mode %s failed", run.spec)
            return ModeResult(
                mode=run.spec, error=ModeError(message=str(error), type="InternalError", code=500)
            )
        return _result(run.spec, progress)


async def _absorb(event: dict[str, Any], progress: _Progress, on_delta: OnDelta | None) -> None:
    progress.lcrag.update(event.get("lcrag") or {})
    progress.usage = event.get("usage") or progress.usage
    for choice in event.get("choices") or []:
        content = (choice.get("delta") or {}).get("content")
        if not content:
            continue
        if progress.first_token_at is None:
            progress.first_token_at = time.perf_counter()
        progress.text += content
        if on_delta is not None:
            await on_delta(content)


def _result(spec: str, progress: _Progress) -> ModeResult:
    meta = progress.lcrag
    kv = meta.get("kv")
    timings = meta.get("timings") or {}
    engine = timings.get("engine") or {}
    return ModeResult(
        mode=spec,
        answer=progress.text,
        citations=meta.get("citations", []),
        prompt_tokens=meta.get("prompt_tokens", progress.usage.get("prompt_tokens")),
        completion_tokens=progress.usage.get("completion_tokens"),
        ttft_ms=_ms_since(progress.started, progress.first_token_at),
        total_ms=_ms_since(progress.started, time.perf_counter()),
        retrieval_ms=timings.get("retrieval_ms"),
        queue_ms=engine.get("queue_ms"),
        prefill_ms=engine.get("prefill_ms"),
        decode_ms=engine.get("decode_ms"),
        kv=kv,
        kv_tokens=kv.get("tokens_after") if isinstance(kv, dict) else None,
        kv_blocks=kv.get("blocks_after") if isinstance(kv, dict) else None,
        route=meta.get("route"),
        reason=meta.get("reason"),
    )


def _error_result(spec: str, status: int, body: bytes) -> ModeResult:
    try:
        payload = json.loads(body)
        error = payload.get("error", payload)
        message, kind, code = str(error["message"]), str(error.get("type", "Error")), error.get("code")
        code = code if isinstance(code, int) else status
    except (ValueError, KeyError, TypeError, AttributeError):
        message, kind, code = body.decode(errors="replace")[:500] or f"HTTP {status}", "Error", status
    return ModeResult(mode=spec, error=ModeError(message=message, type=kind, code=code))


def _ms_since(started: float, at: float | None) -> float | None:
    return None if at is None else round((at - started) * 1000.0, 2)


async def stream_events(caller: Caller, runs: list[ModeRun], isolated: bool = False) -> AsyncIterator[bytes]:
    """Every mode's deltas as they arrive, then its result; `[DONE]` when all modes are done. Isolated: one
    mode after another, each timed from its own start."""
    events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    started = time.perf_counter()

    async def one(run: ModeRun) -> None:
        async def on_delta(content: str) -> None:
            await events.put({"mode": run.spec, "type": "delta", "content": content})

        result = await caller.run(run, time.perf_counter() if isolated else started, on_delta)
        await events.put({"mode": run.spec, "type": "result", "result": result.model_dump(mode="json")})

    async def in_turn() -> None:
        for run in runs:
            await one(run)

    tasks = [asyncio.create_task(in_turn())] if isolated else [asyncio.create_task(one(run)) for run in runs]
    try:
        remaining = len(runs)  # one result event per mode
        while remaining:
            event = await events.get()
            remaining -= event["type"] == "result"
            yield b"data: " + json.dumps(event).encode() + b"\n\n"
        yield b"data: [DONE]\n\n"
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
