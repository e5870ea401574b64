"""Show the `lcrag` request field in the OpenAPI schema of vLLM's chat and completion routes.

`LcragOptionsMiddleware` takes the field out of the body before vLLM parses it, so vLLM's request models
never name it and the schema would hide it from clients and from schema fuzzers. This adds it, with its
constraints (collection name pattern, mode, top_k and ratio ranges ...), to those routes' request bodies.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI

from server.schemas import LcragOptions

REF_TEMPLATE = "#/components/schemas/{model}"
FIELD_DESCRIPTION = (
    "lcrag's extension: answer from a collection (rag, lc or auto) and/or evict KV-cache entries. "
    "Removed before vLLM reads the request."
)


def add_lcrag_field(app: FastAPI, paths: frozenset[str]) -> None:
    """Make `app.openapi()` list the `lcrag` field in the JSON request bodies of `paths`."""
    build: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None and "LcragOptions" in _components(app.openapi_schema):
            return app.openapi_schema
        schema = build()
        options = LcragOptions.model_json_schema(ref_template=REF_TEMPLATE)
        components = _components(schema)
        components.update(options.pop("$defs", {}))
        components["LcragOptions"] = options
        for path in paths:
            body = _json_body(schema, path)
            if body is not None:
                body.setdefault("properties", {})["lcrag"] = {
                    "anyOf": [{"$ref": REF_TEMPLATE.format(model="LcragOptions")}, {"type": "null"}],
                    "description": FIELD_DESCRIPTION,
                }
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def _components(schema: dict[str, Any]) -> dict[str, Any]:
    return schema.setdefault("components", {}).setdefault("schemas", {})


def _json_body(schema: dict[str, Any], path: str) -> dict[str, Any] | None:
    """The object schema of `path`'s POST JSON body (following a `$ref` or an `anyOf` of refs)."""
    try:
        body = schema["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]
    except KeyError:
        return None
    for ref in [body, *body.get("anyOf", []), *body.get("oneOf", [])]:
        if "$ref" in ref:
            return _components(schema).get(ref["$ref"].rsplit("/", 1)[-1])
    return body if body.get("type") == "object" else None
