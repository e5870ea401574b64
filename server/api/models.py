"""GET /v1/models: vLLM's list plus `<collection>@rag`, `@lc` and `@auto` for every collection, so plain
OpenAI clients and chat UIs can pick a collection and a mode by model name. Replaces vLLM's route."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, FastAPI, Request
from starlette.concurrency import run_in_threadpool

from server.api.vllm_routes import drop_vllm_route
from server.pipeline.request import MODEL_NAME_SEPARATOR, MODES
from server.services import Services

router = APIRouter()


@router.get("/v1/models")
async def list_models(request: Request) -> dict[str, Any]:
    listing = (await request.app.state.openai_serving_models.show_available_models()).model_dump()
    services: Services = request.app.state.lcrag
    base = next(card for card in listing["data"] if card["id"] == services.served_model)
    collections = await run_in_threadpool(services.store.list_collections)
    listing["data"] += [
        {**base, "id": f"{name}{MODEL_NAME_SEPARATOR}{mode}", "parent": services.served_model}
        for name in collections
        for mode in MODES
    ]
    return listing


def replace_vllm_models_route(app: FastAPI) -> None:
    drop_vllm_route(app, "/v1/models", "GET")
    app.include_router(router)
