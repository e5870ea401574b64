"""GET /v1/kv/policies: the KV-cache eviction policies this server knows, with their options."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from compression import registry

router = APIRouter(tags=["kv"])


@router.get("/v1/kv/policies")
def list_policies() -> dict[str, Any]:
    return {"object": "list", "data": registry.describe()}
