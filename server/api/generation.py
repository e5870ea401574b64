"""POST /v1/chat/completions and /v1/completions: vLLM's routes, replaced so the body is parsed once into
vLLM's own request model with the `lcrag` field (`server.pipeline`), planned, and handed to vLLM's handler.
The response is vLLM's, with the `lcrag` field added where the request asked something of lcrag.

Like vLLM's routes: the body must be JSON, a client that disconnects cancels the work
(`with_cancellation`), and server load is tracked when enabled (`load_aware_call`).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel
from vllm.entrypoints.serve.engine.protocol import ErrorResponse
from vllm.entrypoints.serve.utils.api_utils import load_aware_call, validate_json_request, with_cancellation
from vllm.entrypoints.serve.utils.sse_keep_alive import with_sse_keep_alive

from server.api.vllm_routes import drop_vllm_route
from server.pipeline.pipeline import Pipeline
from server.pipeline.reply import Reply
from server.pipeline.request import LcragChatRequest, LcragCompletionRequest, parse_request

CHAT_PATH = "/v1/chat/completions"
COMPLETION_PATH = "/v1/completions"
BODIES: dict[str, type[BaseModel]] = {CHAT_PATH: LcragChatRequest, COMPLETION_PATH: LcragCompletionRequest}
router = APIRouter()


def _body(path: str) -> dict[str, Any]:
    """The route's documented JSON body (`server.openapi` adds the schema it points at)."""
    schema = {"$ref": f"#/components/schemas/{BODIES[path].__name__}"}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


@router.post(CHAT_PATH, openapi_extra=_body(CHAT_PATH))
async def chat_completions(raw_request: Request) -> Any:
    await validate_json_request(raw_request)
    request = parse_request(await raw_request.body(), LcragChatRequest)
    return await _chat(request, raw_request)


@router.post(COMPLETION_PATH, openapi_extra=_body(COMPLETION_PATH))
async def completions(raw_request: Request) -> Any:
    await validate_json_request(raw_request)
    request = parse_request(await raw_request.body(), LcragCompletionRequest)
    return await _completion(request, raw_request)


@with_cancellation
@load_aware_call
async def _chat(request: LcragChatRequest, raw_request: Request) -> Any:
    handler = raw_request.app.state.openai_serving_chat
    if handler is None:
        raise NotImplementedError("The model does not support Chat Completions API")
    request, reply = await pipeline_of(raw_request).chat(request)
    return respond(await handler.create_chat_completion(request, raw_request), reply, raw_request)


@with_cancellation
@load_aware_call
async def _completion(request: LcragCompletionRequest, raw_request: Request) -> Any:
    handler = raw_request.app.state.openai_serving_completion
    if handler is None:
        raise NotImplementedError("The model does not support Completions API")
    request, reply = await pipeline_of(raw_request).completion(request)
    return respond(await handler.create_completion(request, raw_request), reply, raw_request)


def pipeline_of(raw_request: Request) -> Pipeline:
    pipeline: Pipeline = raw_request.app.state.lcrag_pipeline
    return pipeline


def respond(result: Any, reply: Reply | None, raw_request: Request) -> Any:
    """vLLM's handler result as a response: an error, a JSON body or a stream of events."""
    if isinstance(result, ErrorResponse):
        return JSONResponse(content=result.model_dump(), status_code=result.error.code)
    if isinstance(result, BaseModel):
        payload = result.model_dump()
        return JSONResponse(content=reply.json(payload) if reply is not None else payload)
    events = reply.stream(result) if reply is not None else result
    args = getattr(raw_request.app.state, "args", None)
    keep_alive = float(getattr(args, "sse_keep_alive_interval", 0) or 0)
    return StreamingResponse(content=with_sse_keep_alive(events, keep_alive), media_type="text/event-stream")


def replace_vllm_generation_routes(app: FastAPI) -> None:
    for path in BODIES:
        drop_vllm_route(app, path, "POST")
    app.include_router(router)
