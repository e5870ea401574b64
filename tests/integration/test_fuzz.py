"""Schema fuzzing (schemathesis) against the tiny-model server's own OpenAPI: lcrag's routes and vLLM's chat
and completion routes, with the `lcrag` field generated from its schema. Deterministic (derandomized, no
example database) and bounded (15 requests per operation, answers of at most 4 tokens):
whatever is generated, no answer is a 5xx."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings

from tests.conftest import RunningServer

pytestmark = pytest.mark.integration

FUZZED_PATHS = r"^/v1/(collections|compare|kv|models|chat/completions|completions)"
MAX_TOKENS = 4
PROMPT_CHARS = 100
COLLECTION = "fuzz-docs"
GENERATION_PATHS = ("/v1/chat/completions", "/v1/completions")
FUZZ_SETTINGS = settings(
    max_examples=15,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    phases=[Phase.explicit, Phase.generate],  # no shrinking: the first failing request is reported as is
)


def collection_names(server: RunningServer) -> set[str]:
    listed = httpx.get(f"{server.base_url}/v1/collections", headers=server.headers(), timeout=60).json()
    return {collection["name"] for collection in listed["data"]}


@pytest.fixture(scope="module")
def fuzz_schema(tiny_server: RunningServer) -> Iterator[schemathesis.BaseSchema]:
    """The server's schema, its base URL set, restricted to the fuzzed routes; collections the fuzzer
    creates are deleted afterwards (the server is shared with other tests)."""
    before = collection_names(tiny_server)
    with httpx.Client(base_url=tiny_server.base_url, headers=tiny_server.headers(), timeout=120) as client:
        assert client.post("/v1/collections", json={"name": COLLECTION}).status_code == 201
        files = [("files", ("ferry.txt", b"The harbour ferry leaves at nine.", "text/plain"))]
        assert client.post(f"/v1/collections/{COLLECTION}/documents", files=files).status_code == 200
    loaded = schemathesis.openapi.from_url(
        f"{tiny_server.base_url}/openapi.json", headers=tiny_server.headers()
    )
    loaded.config.update(base_url=tiny_server.base_url)
    yield loaded.include(path_regex=FUZZED_PATHS)
    for name in collection_names(tiny_server) - before:
        httpx.delete(
            f"{tiny_server.base_url}/v1/collections/{name}", headers=tiny_server.headers(), timeout=60
        )


def test_the_lcrag_field_is_in_the_generation_routes_schema(tiny_server: RunningServer) -> None:
    document = httpx.get(
        f"{tiny_server.base_url}/openapi.json", headers=tiny_server.headers(), timeout=60
    ).json()
    components = document["components"]["schemas"]
    for path in ("/v1/chat/completions", "/v1/completions"):
        body = document["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]
        name = next(ref["$ref"] for ref in [body, *body.get("anyOf", [])] if "$ref" in ref).rsplit("/", 1)[-1]
        assert "lcrag" in components[name]["properties"], path
    options = components["LcragOptions"]["properties"]
    assert options["collection"]["anyOf"][0]["pattern"].startswith("^[a-z0-9]")
    assert options["mode"]["anyOf"][0]["enum"] == ["rag", "lc", "auto"]
    ratio = components["KVSpec"]["properties"]["ratio"]
    assert (ratio["minimum"], ratio["exclusiveMaximum"]) == (0.0, 1.0)


def aim(body: dict, path: str, model: str) -> None:
    """Point a generated request at things that exist (the served model, the fuzz collection), so the
    fuzzer gets past 'no such model' to the fields lcrag and vLLM act on."""
    if path in GENERATION_PATHS:
        body["model"] = model
        if isinstance(body.get("lcrag"), dict) and body["lcrag"].get("collection") is not None:
            body["lcrag"]["collection"] = COLLECTION
    elif path == "/v1/compare":
        body["collection"] = COLLECTION
        body.pop("model", None)


def bound_the_work(body: dict, generation: bool) -> None:
    """Keep a generated request small: a few answer tokens, one or two choices, a few prompts."""
    if generation or "max_tokens" in body:
        body["max_tokens"] = MAX_TOKENS
    body.pop("max_completion_tokens", None)
    for field in ("n", "best_of"):
        if isinstance(body.get(field), int) and body[field] > 2:
            body[field] = 2
    if isinstance(body.get("prompt"), list):
        body["prompt"] = body["prompt"][:2]
    if isinstance(body.get("prompt"), str):
        body["prompt"] = body["prompt"][:PROMPT_CHARS]  # inside the tiny server's 512-token window
    if isinstance(body.get("messages"), list):
        body["messages"] = body["messages"][:3]
        for message in body["messages"]:
            if isinstance(message, dict) and isinstance(message.get("content"), str):
                message["content"] = message["content"][:PROMPT_CHARS]


def test_no_generated_request_is_a_server_error(
    fuzz_schema: schemathesis.BaseSchema, tiny_server: RunningServer
) -> None:
    """Every fuzzed operation in turn; the failures of all of them are reported together."""
    failures, operations, statuses = [], 0, Counter()
    for result in fuzz_schema.get_all_operations():
        operation = result.ok()
        operations += 1

        @FUZZ_SETTINGS
        @given(case=operation.as_strategy())
        def no_server_error(case) -> None:
            if isinstance(case.body, dict):
                aim(case.body, case.path, tiny_server.model)
                bound_the_work(case.body, generation=case.path in GENERATION_PATHS)
            response = case.call(headers=tiny_server.headers(), timeout=120)
            statuses[f"{case.method} {case.operation.path} {response.status_code}"] += 1
            assert response.status_code < 500, (case.method, case.path, case.body, response.text[:500])

        try:
            no_server_error()
        except AssertionError as error:
            failures.append(f"{operation.label}: {error}")
    assert operations >= 12, f"only {operations} operations matched {FUZZED_PATHS}"
    assert failures == []
    print("\n".join(f"{count:4d} {key}" for key, count in sorted(statuses.items())))
    answered = {key.rsplit(" ", 1)[0] for key in statuses if key.endswith((" 200", " 201"))}
    assert answered & {"POST /v1/chat/completions", "POST /v1/completions"}  # generation ran, not just 4xx
    assert sum(statuses.values()) >= 10 * operations  # the fuzzer got well past the schema's edges
