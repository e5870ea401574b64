"""The one client of an lcrag server's HTTP API, for everything that talks to a running server (the UI, the
evals, the benchmarks, `lcrag ask` and `lcrag collections`, the LangChain retriever): a connection that
sends the API key, streamed (SSE) events parsed in one place, and every failure, a refusal or no answer at
all, as one `ApiFailure` with the server's own message.

    http = connect("http://127.0.0.1:8000", api_key)
    for event in chat_events(http, {"model": "docs@lc", "messages": [...]}):
        print(delta_text(event), end="")

The functions take the `httpx.Client` that `connect` makes (a suite passes it around and may send its own
requests on it); `LcragClient` binds them to one server for the UI. Imports nothing of lcrag's server,
UI, evals or CLI.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx

TIMEOUT_S = 600.0
SSE_DATA = "data: "
SSE_DONE = "data: [DONE]"


class ApiFailure(Exception):
    """A request the server refused (`status` is its HTTP status) or did not answer (`status` None);
    `message` is the server's own explanation, or what went wrong on the way."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


def auth_headers(api_key: str | None) -> dict[str, str]:
    """The `Authorization` header an lcrag server started with `--api-key` wants (none without a key)."""
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


def connect(
    base_url: str, api_key: str | None = None, timeout: float = TIMEOUT_S, **options: Any
) -> httpx.Client:
    """A client of the server at `base_url` (no /v1) that sends `api_key` with every request; `options` go
    to `httpx.Client` (a `transport`, say)."""
    return httpx.Client(base_url=base_url, headers=auth_headers(api_key), timeout=timeout, **options)


def connect_async(base_url: str, api_key: str | None = None, timeout: float = TIMEOUT_S) -> httpx.AsyncClient:
    """`connect` for asyncio code."""
    return httpx.AsyncClient(base_url=base_url, headers=auth_headers(api_key), timeout=timeout)


def failure_of(response: httpx.Response) -> ApiFailure:
    """A refused request as an `ApiFailure`: the message of lcrag's error body, else the start of the body."""
    try:
        message = response.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = response.text[:300] or response.reason_phrase
    return ApiFailure(str(message), response.status_code)


def no_answer(http: httpx.Client | httpx.AsyncClient, error: httpx.HTTPError) -> ApiFailure:
    return ApiFailure(f"The lcrag server at {http.base_url} did not answer: {error}")


def checked(response: httpx.Response) -> Any:
    """The JSON body of a success (None when it has none), else the refusal as an `ApiFailure`."""
    if response.status_code >= 400:
        raise failure_of(response)
    return response.json() if response.content else None


def call(http: httpx.Client, method: str, path: str, **kwargs: Any) -> Any:
    """One request (httpx's keyword arguments: `json`, `files`, `params`, ...); its JSON body."""
    try:
        response = http.request(method, path, **kwargs)
    except httpx.HTTPError as error:
        raise no_answer(http, error) from None
    return checked(response)


async def call_async(http: httpx.AsyncClient, method: str, path: str, **kwargs: Any) -> Any:
    """`call` for asyncio code."""
    try:
        response = await http.request(method, path, **kwargs)
    except httpx.HTTPError as error:
        raise no_answer(http, error) from None
    return checked(response)


def events(http: httpx.Client, path: str, body: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """POST `body` to a streaming route: each server-sent `data:` event, parsed, until `[DONE]`."""
    try:
        with http.stream("POST", path, json=body) as response:
            if response.status_code != 200:
                response.read()
                raise failure_of(response)
            for line in response.iter_lines():
                if line.startswith(SSE_DATA) and line != SSE_DONE:
                    yield json.loads(line[len(SSE_DATA) :])
    except httpx.HTTPError as error:
        raise no_answer(http, error) from None


def chat_events(http: httpx.Client, body: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """`POST /v1/chat/completions` streamed: the OpenAI chunks, each with lcrag's `lcrag` field where the
    server sends one (citations, timings, prompt tokens)."""
    return events(http, "/v1/chat/completions", {**body, "stream": True})


def delta_text(chunk: dict[str, Any]) -> str:
    """The answer text a streamed chat chunk adds."""
    return "".join((choice.get("delta") or {}).get("content") or "" for choice in chunk.get("choices") or [])


def model_cards(http: httpx.Client) -> list[dict[str, Any]]:
    """`GET /v1/models`: the served model first, then LoRA adapters and the `<collection>@<mode>` aliases."""
    return call(http, "GET", "/v1/models")["data"]


def served_model(http: httpx.Client) -> str:
    """The name the server serves its base model under."""
    return model_cards(http)[0]["id"]


def kv_pool(http: httpx.Client) -> dict[str, Any] | None:
    """`GET /v1/kv/caches`: the KV block pool and its compressed context caches (`data`); None when the
    server runs without lcrag's KV eviction."""
    try:
        return call(http, "GET", "/v1/kv/caches")
    except ApiFailure as failure:
        if failure.status == 501:
            return None
        raise


def kv_bytes_per_token(http: httpx.Client) -> float | None:
    """KV-cache bytes one token holds, from the server's KV pool; None without lcrag's KV eviction."""
    pool = kv_pool(http)
    return None if pool is None else pool["block_bytes"] / pool["block_size"]


def kv_policies(http: httpx.Client) -> list[dict[str, Any]]:
    """`GET /v1/kv/policies`: each eviction policy with its `name` and whether it is `query_agnostic`."""
    return call(http, "GET", "/v1/kv/policies")["data"]


def delete_collection(http: httpx.Client, name: str, missing_ok: bool = False) -> None:
    try:
        call(http, "DELETE", f"/v1/collections/{name}")
    except ApiFailure as failure:
        if not (missing_ok and failure.status == 404):
            raise


def replace_collection(
    http: httpx.Client, name: str, files: Sequence[tuple[str, str]]
) -> list[dict[str, Any]]:
    """The collection `name` made anew (an old one deleted) from (file name, text) pairs, uploaded in that
    order; returns the upload's `files` (each with its `doc_id`)."""
    delete_collection(http, name, missing_ok=True)
    call(http, "POST", "/v1/collections", json={"name": name})
    uploads = [("files", (file_name, text.encode(), "text/plain")) for file_name, text in files]
    return call(http, "POST", f"/v1/collections/{name}/documents", files=uploads)["files"]


class LcragClient:
    """Typed calls to one lcrag server (what the UI's handlers use); every failure is an `ApiFailure`."""

    def __init__(self, base_url: str, api_key: str | None = None, timeout: float = TIMEOUT_S) -> None:
        self.http = connect(base_url, api_key, timeout)

    def collections(self) -> list[dict[str, Any]]:
        return self._call("GET", "/v1/collections")["data"]

    def collection(self, name: str) -> dict[str, Any]:
        return self._call("GET", f"/v1/collections/{name}")

    def collection_caches(self, name: str) -> list[dict[str, Any]]:
        """The collection's compressed context caches; none when the server has no KV eviction."""
        try:
            return self._call("GET", f"/v1/collections/{name}/kv-cache")["data"]
        except ApiFailure as failure:
            if failure.status == 501:
                return []
            raise

    def kv_caches(self) -> list[dict[str, Any]]:
        """Every compressed context cache the server holds; none when it has no KV eviction."""
        pool = kv_pool(self.http)
        return [] if pool is None else pool["data"]

    def create_collection(self, name: str) -> dict[str, Any]:
        return self._call("POST", "/v1/collections", json={"name": name})

    def upload(self, collection: str, path: Path) -> dict[str, Any]:
        with path.open("rb") as file:
            return self._call(
                "POST", f"/v1/collections/{collection}/documents", files=[("files", (path.name, file))]
            )

    def delete_collection(self, name: str) -> None:
        delete_collection(self.http, name)

    def documents(self, collection: str) -> list[dict[str, Any]]:
        return self._call("GET", f"/v1/collections/{collection}/documents")["data"]

    def document(self, collection: str, doc_id: str) -> dict[str, Any]:
        """One document with its text and `chunk_list`."""
        return self._call("GET", f"/v1/collections/{collection}/documents/{doc_id}")

    def delete_document(self, collection: str, doc_id: str) -> None:
        self._call("DELETE", f"/v1/collections/{collection}/documents/{doc_id}")

    def kv_bytes_per_token(self) -> float | None:
        """KV-cache bytes one token holds; None without lcrag's eviction or when the server cannot tell."""
        try:
            return kv_bytes_per_token(self.http)
        except ApiFailure:  # the budget line then leaves the KV memory out
            return None

    def served_model(self) -> str:
        return served_model(self.http)

    def models(self) -> list[str]:
        """Served base models and LoRA adapters (not the `<collection>@<mode>` aliases)."""
        return [card["id"] for card in model_cards(self.http) if "@" not in card["id"]]

    def kv_policies(self) -> list[str]:
        return [policy["name"] for policy in kv_policies(self.http)]

    def compare_stream(
        self,
        question: str,
        collection: str,
        modes: Sequence[str],
        model: str | None = None,
        max_tokens: int | None = None,
        history: Sequence[dict[str, str]] = (),
        settings: dict[str, Any] | None = None,
    ) -> Iterator[dict[str, Any]]:
        """POST /v1/compare with `stream: true`: its events (`delta`, `result`), tagged with their mode;
        `settings` adds fields of the request (temperature, top_k, retrieval, system_prompt, ...)."""
        body = {
            **(settings or {}),
            "question": question,
            "collection": collection,
            "modes": list(modes),
            "model": model,
            "max_tokens": max_tokens,
            "history": list(history),
            "stream": True,
        }
        return events(self.http, "/v1/compare", body)

    def chat_events(self, body: dict[str, Any]) -> Iterator[dict[str, Any]]:
        return chat_events(self.http, body)

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        return call(self.http, method, path, **kwargs)
