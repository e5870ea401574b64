"""POST /v1/compare: one question, several modes at once on the one engine, each answer with its costs.

Each mode is a chat request with an `lcrag` field, planned by the same pipeline as a client's chat request
(`server.pipeline`: retrieval or LC assembly, KV eviction, the `lcrag` reply fields) and run on the engine
in this process, so the numbers are what a client's request costs, and vLLM batches the concurrent
requests. Times are measured here from the moment the compare request started, so they include each
mode's share of the engine.

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
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from compression.spec import KVSpec
from rag.errors import RagError
from server.engine import Engine
from server.errors import ApiError, BadRequestError, NotFoundError, from_rag_error
from server.pipeline.pipeline import Pipeline
from server.pipeline.request import LcragChatRequest, parse_mode_spec
from server.schemas import CompareRequest, CompareResponse, ModeError, ModeResult
from server.services import Services

log = logging.getLogger("lcrag.server.compare")
router = APIRouter(tags=["compare"])
OnDelta = Callable[[str], Awaitable[None]]


@dataclass(frozen=True)
class ModeRun:
    """One mode of a compare request: its spec as the client wrote it and the chat request it becomes."""

    spec: str
    chat: dict[str, Any]


@dataclass
class _Progress:
    """What one mode's answer has delivered so far."""

    started: float
    text: str = ""
    first_token_at: float | None = None
    completion_tokens: int = 0


@router.post("/v1/compare", response_model=CompareResponse)
async def compare(body: CompareRequest, request: Request) -> Any:
    services: Services = request.app.state.lcrag
    runs = plan(body, services)
    try:
        await run_in_threadpool(services.store.require_collection, body.collection)
    except RagError as error:
        raise from_rag_error(error, param="collection") from None
    caller = ModeRunner(request.app.state.lcrag_pipeline, request.app.state.openai_serving_chat)
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
        "lcrag": lcrag,
    }
    if body.repetition_penalty is not None:
        chat["repetition_penalty"] = body.repetition_penalty
    return chat


class ModeRunner:
    """Runs each mode's chat request through the pipeline and on the engine, in this process."""

    def __init__(self, pipeline: Pipeline, chat_handler: Any) -> None:
        self.pipeline = pipeline
        self.default_sampling = chat_handler.default_sampling_params if chat_handler is not None else {}

    async def run(self, run: ModeRun, started: float, on_delta: OnDelta | None = None) -> ModeResult:
        """One mode's answer to the end; its result or its error entry, never an exception."""
        progress = _Progress(started)
        try:
            return await self._answer(run, progress, on_delta)
        except ApiError as error:
            return ModeResult(
                mode=run.spec,
                error=ModeError(message=error.message, type=error.kind, code=error.status.value),
            )
        except Exception as error:  # an entry for this mode; the other modes go on
            log.exception("compare: mode %s failed", run.spec)
            return ModeResult(
                mode=run.spec, error=ModeError(message=str(error), type="InternalError", code=500)
            )

    async def _answer(self, run: ModeRun, progress: _Progress, on_delta: OnDelta | None) -> ModeResult:
        from vllm.sampling_params import RequestOutputKind

        engine, services = self.pipeline.engine, self.pipeline.services
        assert engine is not None and services is not None
        request, reply = await self.pipeline.chat(LcragChatRequest.model_validate(run.chat))
        check_model(engine, services, request.model)
        assert reply is not None and request.planned is not None
        params = request.to_sampling_params(run.chat["max_tokens"], self.default_sampling)
        params.output_kind = RequestOutputKind.DELTA
        request_id = f"compare-{uuid.uuid4().hex}"
        async for output in engine.generate(request.planned.token_ids, params, request.model, request_id):
            for sample in output.outputs:
                progress.completion_tokens += len(sample.token_ids)
                if not sample.text:
                    continue
                if progress.first_token_at is None:
                    progress.first_token_at = time.perf_counter()
                progress.text += sample.text
                if on_delta is not None:
                    await on_delta(sample.text)
        fields = {**reply.head_fields(), **reply.tail_fields(request_id, progress.first_token_at)}
        return _result(run.spec, progress, fields)


def check_model(engine: Engine, services: Services, model: str | None) -> None:
    """A 404 for a model that is neither the served one nor a loaded adapter."""
    if model and model != services.served_model and engine.lora_request(model) is None:
        raise NotFoundError(f"The model `{model}` does not exist.", param="model")


def _result(spec: str, progress: _Progress, meta: dict[str, Any]) -> ModeResult:
    kv = meta.get("kv")
    timings = meta.get("timings") or {}
    engine = timings.get("engine") or {}
    return ModeResult(
        mode=spec,
        answer=progress.text,
        citations=meta.get("citations", []),
        prompt_tokens=meta.get("prompt_tokens"),
        completion_tokens=progress.completion_tokens,
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


def _ms_since(started: float, at: float | None) -> float | None:
    return None if at is None else round((at - started) * 1000.0, 2)


async def stream_events(
    caller: ModeRunner, runs: list[ModeRun], isolated: bool = False
) -> AsyncIterator[bytes]:
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
