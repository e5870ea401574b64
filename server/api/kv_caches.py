"""Compressed context caches over HTTP: build one for a collection ahead of its first question (PUT), list
them with their memory and hits (GET), drop them (DELETE); `GET /v1/kv/caches` lists every resident one.
An LC request with a query-agnostic policy (`docs@lc:kvzip-0.75`) uses, or builds, the same cache."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from compression import registry
from rag.errors import RagError
from server.errors import BadRequestError, NotFoundError, NotImplementedYetError, from_rag_error
from server.kv_cache import ContextCaches
from server.pipeline.modes.lc import collection_context
from server.schemas import KVCacheBuild, KVCacheBuilt, KVCacheList, KVCacheOut
from server.services import Services

router = APIRouter(tags=["kv"])


def caches_of(request: Request) -> tuple[Services, ContextCaches]:
    services: Services = request.app.state.lcrag
    if services.context_caches is None:
        raise NotImplementedYetError(
            "Context caches need lcrag's KV eviction in the engine: serve with --kv-eviction (CPU).",
            param="policy",
        )
    return services, services.context_caches


@router.put("/v1/collections/{name}/kv-cache", response_model=KVCacheBuilt)
async def build_cache(name: str, body: KVCacheBuild, request: Request) -> Any:
    services, caches = caches_of(request)
    kv = body.kv()
    try:
        policy = kv.policy_object
    except registry.PolicyError as error:
        raise BadRequestError(f"Invalid 'policy': {error}", param="policy") from None
    if not policy.query_agnostic:
        agnostic = ", ".join(sorted(n for n, p in registry.policies().items() if p.query_agnostic))
        raise BadRequestError(
            f"KV policy {kv.policy!r} scores with a question's attention, so it cannot compress a context "
            f"once for every question; use a query-agnostic one: {agnostic}.",
            param="policy",
        )
    model = body.model if body.model and body.model != services.served_model else None
    if model is not None and caches.engine.lora_request(model) is None:
        raise NotFoundError(
            f"Unknown model {body.model!r}: use the served model or a loaded adapter.", "model"
        )
    try:
        context = await run_in_threadpool(collection_context, services, name)
    except RagError as error:
        raise from_rag_error(error) from None
    return KVCacheBuilt(**await caches.build(context, kv, model, label=name))


@router.get("/v1/collections/{name}/kv-cache", response_model=KVCacheList)
async def list_collection_caches(name: str, request: Request) -> KVCacheList:
    services, caches = caches_of(request)
    try:
        await run_in_threadpool(services.store.require_collection, name)
    except RagError as error:
        raise from_rag_error(error) from None
    return _listing(await caches.describe(label=name))


@router.delete("/v1/collections/{name}/kv-cache", response_model=KVCacheList)
async def drop_collection_caches(name: str, request: Request) -> KVCacheList:
    _, caches = caches_of(request)
    dropped = await caches.drop(label=name)
    listing = await caches.describe()
    return _listing({**listing, "caches": dropped["dropped"]})


@router.get("/v1/kv/caches", response_model=KVCacheList)
async def list_caches(request: Request) -> KVCacheList:
    _, caches = caches_of(request)
    return _listing(await caches.describe())


def _listing(described: dict[str, Any]) -> KVCacheList:
    fields = {key: value for key, value in described.items() if key != "caches"}
    return KVCacheList(data=[KVCacheOut(**cache) for cache in described["caches"]], **fields)
