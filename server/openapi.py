"""The JSON bodies of lcrag's generation routes in the OpenAPI schema.

Those routes parse their body themselves (once, `server.pipeline.request`), so FastAPI does not know its
model; this puts each model's schema (vLLM's request with the `lcrag` field, with its constraints:
collection name pattern, mode, top_k and ratio ranges ...) into the schema's components.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel

REF_TEMPLATE = "#/components/schemas/{model}"


def add_body_schemas(app: FastAPI, bodies: dict[str, type[BaseModel]]) -> None:
    """Make `app.openapi()` hold the schema of each model that `bodies` (path -> model) names."""
    build: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = build()
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for model in set(bodies.values()):
            body = model.model_json_schema(ref_template=REF_TEMPLATE)
            components.update(body.pop("$defs", {}))
            components[model.__name__] = body
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
