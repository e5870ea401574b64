"""The UI's only way to the server: its HTTP API (the same one any client uses), through httpx."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx

TIMEOUT_S = 600.0


class ApiFailure(Exception):
    """A request the server refused or could not answer; `message` is the server's own explanation."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


class LcragClient:
    """Typed calls to one lcrag server; every failure becomes an `ApiFailure` with a readable message."""

    def __init__(self, base_url: str, api_key: str | None = None, timeout: float = TIMEOUT_S) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = httpx.Client(base_url=base_url, headers=headers, timeout=timeout)

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

    def create_collection(self, name: str) -> dict[str, Any]:
        return self._call("POST", "/v1/collections", json={"name": name})

    def upload(self, collection: str, path: Path) -> dict[str, Any]:
        with path.open("rb") as file:
            return self._call(
                "POST", f"/v1/collections/{collection}/documents", files=[("files", (path.name, file))]
            )

    def delete_collection(self, name: str) -> None:
        self._call("DELETE", f"/v1/collections/{name}")

    def documents(self, collection: str) -> list[dict[str, Any]]:
        return self._call("GET", f"/v1/collections/{collection}/documents")["data"]

    def document(self, collection: str, doc_id: str) -> dict[str, Any]:
        """One document with its text and `chunk_list`."""
        return self._call("GET", f"/v1/collections/{collection}/documents/{doc_id}")

    def delete_document(self, collection: str, doc_id: str) -> None:
        self._call("DELETE", f"/v1/collections/{collection}/documents/{doc_id}")

    def kv_bytes_per_token(self) -> float | None:
        """KV-cache bytes one token holds, from the server's KV pool; None without lcrag's eviction."""
        from evals.api import kv_bytes_per_token

        try:
            return kv_bytes_per_token(self.http)
        except httpx.HTTPError:  # the budget line then leaves the KV memory out
            return None

    def models(self) -> list[str]:
        """Served base models and LoRA adapters (not the `<collection>@<mode>` aliases)."""
        return [card["id"] for card in self._call("GET", "/v1/models")["data"] if "@" not in card["id"]]

    def kv_policies(self) -> list[str]:
        return [policy["name"] for policy in self._call("GET", "/v1/kv/policies")["data"]]

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
        try:
            with self.http.stream("POST", "/v1/compare", json=body) as response:
                if response.status_code != 200:
                    response.read()
                    raise failure_of(response)
                for line in response.iter_lines():
                    if line.startswith("data: ") and line != "data: [DONE]":
                        yield json.loads(line[len("data: ") :])
        except httpx.HTTPError as error:
            raise ApiFailure(f"The server did not answer: {error}") from None

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.HTTPError as error:
            raise ApiFailure(f"The server did not answer: {error}") from None
        if response.status_code >= 400:
            raise failure_of(response)
        return response.json()


def failure_of(response: httpx.Response) -> ApiFailure:
    try:
        message = response.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = response.text[:300] or response.reason_phrase
    return ApiFailure(str(message), response.status_code)
