"""Compressed context caches through the HTTP API: `PUT /v1/collections/{name}/kv-cache` builds one (KVzip's
reconstruction passes included), `GET` lists it with its memory and hits, an `lc` question with the same
policy answers from it and says so, an upload invalidates it, `DELETE` drops it, /metrics counts it; bad
requests are 4xx naming the field. The tiny server runs vLLM's default CPU block size (128)."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest
from transformers import AutoTokenizer

from compression.spec import context_digest
from rag.context import prompt_token_ids
from tests.conftest import RunningServer

pytestmark = pytest.mark.integration
BLOCK = 128
TEXT = "The old lighthouse keeper counted ships every night and wrote each one down. " * 18  # one chunk


def api(server: RunningServer, method: str, path: str, **kwargs: object) -> httpx.Response:
    return httpx.request(method, f"{server.base_url}{path}", headers=server.headers(), timeout=300, **kwargs)


def metric(server: RunningServer, name: str) -> float:
    text = api(server, "GET", "/metrics").text
    found = re.search(rf"^{name} ([0-9.e+]+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


@pytest.fixture(scope="module")
def collection(tiny_server: RunningServer) -> str:
    name = "cached-docs"
    api(tiny_server, "POST", "/v1/collections", json={"name": name})
    files = {"files": ("keeper.txt", TEXT.encode(), "text/plain")}
    assert api(tiny_server, "POST", f"/v1/collections/{name}/documents", files=files).status_code == 200
    return name


def ask(server: RunningServer, model: str) -> dict[str, object]:
    body = {"model": model, "messages": [{"role": "user", "content": "What did he count?"}], "max_tokens": 4}
    response = api(server, "POST", "/v1/chat/completions", json=body)
    assert response.status_code == 200, response.text
    return response.json()["lcrag"]["kv"]


def test_a_built_cache_is_listed_answers_questions_and_is_dropped(
    tiny_server: RunningServer, collection: str
) -> None:
    path = f"/v1/collections/{collection}/kv-cache"
    hits_before = metric(tiny_server, "lcrag_kv_cache_hits_total")
    built = api(tiny_server, "PUT", path, json={"policy": "knorm", "ratio": 0.5})
    assert built.status_code == 200, built.text
    cache = built.json()
    assert cache["cache"] == "built" and cache["labels"] == [collection] and cache["passes"] == 0
    assert cache["tokens_after"] == BLOCK * cache["blocks"] < cache["tokens_before"]
    assert cache["bytes"] > 0 and cache["build_ms"] > 0 and cache["hits"] == 0
    assert api(tiny_server, "PUT", path, json={"policy": "knorm", "ratio": 0.5}).json()["cache"] == "hit"
    kv = ask(tiny_server, f"{collection}@lc:knorm-0.5")
    assert kv["cache"] == "hit" and kv["tokens_after"] == cache["tokens_after"]
    listing = api(tiny_server, "GET", path).json()
    assert [entry["hits"] for entry in listing["data"]] == [1] and listing["cache_blocks"] == cache["blocks"]
    assert metric(tiny_server, "lcrag_kv_cached_contexts") == listing["cached_contexts"] >= 1
    assert metric(tiny_server, "lcrag_kv_cache_hits_total") == hits_before + 1
    everything = api(tiny_server, "GET", "/v1/kv/caches").json()
    assert cache["digest"] in {entry["digest"] for entry in everything["data"]}
    dropped = api(tiny_server, "DELETE", path).json()
    assert [entry["digest"] for entry in dropped["data"]] == [cache["digest"]]
    assert api(tiny_server, "GET", path).json()["data"] == []


def test_kvzip_runs_its_reconstruction_passes_then_builds(
    tiny_server: RunningServer, collection: str
) -> None:
    path = f"/v1/collections/{collection}/kv-cache"
    built = api(tiny_server, "PUT", path, json={"policy": "kvzip", "ratio": 0.5, "options": {"chunk": 4}})
    assert built.status_code == 200, built.text
    cache = built.json()
    assert cache["cache"] == "built" and cache["passes"] >= 2 and '"chunk": 4' in cache["policy"]
    scored = api(tiny_server, "GET", "/v1/kv/caches").json()["scored_contexts"]
    assert [0, cache["policy"], cache["digest"]] in scored
    again = api(tiny_server, "PUT", path, json={"policy": "kvzip", "ratio": 0.75, "options": {"chunk": 4}})
    assert again.json()["cache"] == "built" and again.json()["passes"] == 0  # the scores are kept
    # a model name carries no options: kvzip's defaults are another cache, built by the first question
    answers = [ask(tiny_server, f"{collection}@lc:kvzip-0.5")["cache"] for _ in range(2)]
    assert answers == ["built", "hit"]
    assert len(api(tiny_server, "GET", path).json()["data"]) == 3
    api(tiny_server, "DELETE", path)


def test_kvzip_without_a_cache_scores_the_whole_prompt_by_its_own_passes(
    tiny_server: RunningServer, collection: str, tiny_model_dir: Path
) -> None:
    """Question inside: `cache: false` on an LC request, or a plain chat, runs the passes over the whole
    prompt, whose scores the engine then keeps (the policy never falls back to keeping recent tokens)."""
    kv = {"policy": "kvzip", "ratio": 0.5, "options": {"chunk": 4}}
    messages = [{"role": "user", "content": TEXT[:600] + " What did he count?"}]
    bodies = [
        {"messages": [{"role": "user", "content": "What did he count?"}],
         "lcrag": {"collection": collection, "mode": "lc", "kv": {**kv, "cache": False}}},
        {"messages": messages, "lcrag": {"kv": kv}},
    ]  # fmt: skip
    for body in bodies:
        body = {"model": tiny_server.model, "max_tokens": 4, **body}
        response = api(tiny_server, "POST", "/v1/chat/completions", json=body)
        assert response.status_code == 200, response.text
        stats = response.json()["lcrag"]["kv"]
        assert stats.get("cache") in (None, "none") and 0 < stats["tokens_after"] < stats["tokens_before"]
    scored = api(tiny_server, "GET", "/v1/kv/caches").json()["scored_contexts"]
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    assert context_digest(prompt_token_ids(tokenizer, messages)) in [digest for _, _, digest in scored]
    assert "failed to score" not in tiny_server.log_path.read_text()
    plain = {"model": tiny_server.model, "prompt": "Hello", "max_tokens": 2, "lcrag": {"kv": kv}}
    completion = api(tiny_server, "POST", "/v1/completions", json=plain)
    assert completion.status_code == 400 and completion.json()["error"]["param"] == "lcrag.kv.policy"


def test_changing_the_documents_drops_the_collections_caches(
    tiny_server: RunningServer, collection: str
) -> None:
    path = f"/v1/collections/{collection}/kv-cache"
    assert ask(tiny_server, f"{collection}@lc:streaming_llm-0.5")["cache"] == "built"
    assert len(api(tiny_server, "GET", path).json()["data"]) == 1
    files = {"files": ("more.txt", b"The keeper also counted gulls.", "text/plain")}
    assert api(tiny_server, "POST", f"/v1/collections/{collection}/documents", files=files).status_code == 200
    assert api(tiny_server, "GET", path).json()["data"] == []
    assert ask(tiny_server, f"{collection}@lc:streaming_llm-0.5")["cache"] == "built"  # the new context
    api(tiny_server, "DELETE", path)


@pytest.mark.parametrize(
    ("name", "body", "status", "param", "phrase"),
    [
        (
            "cached-docs",
            {"policy": "snapkv", "ratio": 0.5},
            400,
            "policy",
            "use a query-agnostic one: expected_attention, knorm, kvzip",
        ),
        ("cached-docs", {"policy": "nope", "ratio": 0.5}, 400, "policy", "Unknown KV policy 'nope'"),
        ("cached-docs", {"policy": "knorm", "ratio": 0.5, "model": "ghost"}, 404, "model", "Unknown model"),
        ("no-such-docs", {"policy": "knorm", "ratio": 0.5}, 404, None, "no-such-docs"),
        (
            "cached-docs",
            {"policy": "kvzip", "ratio": 0.5, "options": {"chunk": 0}},
            400,
            "policy",
            "chunk >= 1",
        ),
    ],
)
def test_bad_cache_builds_are_4xx_naming_the_field(
    tiny_server: RunningServer,
    collection: str,
    name: str,
    body: dict,
    status: int,
    param: str | None,
    phrase: str,
) -> None:
    response = api(tiny_server, "PUT", f"/v1/collections/{name}/kv-cache", json=body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["param"] == param and phrase in error["message"]


@pytest.mark.parametrize("policy", ["snapkv", "knorm"])  # per-request eviction; a context cache
def test_an_lc_answer_reports_what_the_eviction_kept_of_each_document(
    tiny_server: RunningServer, collection: str, policy: str
) -> None:
    kv_asked = {"policy": policy, "ratio": 0.5, "retention": True}
    body = {
        "messages": [{"role": "user", "content": "What did he count?"}],
        "max_tokens": 4,
        "lcrag": {"collection": collection, "mode": "lc", "kv": kv_asked, "top_k": 2},
    }
    response = api(tiny_server, "POST", "/v1/chat/completions", json=body)
    assert response.status_code == 200, response.text
    kv = response.json()["lcrag"]["kv"]
    view = kv["retention"]
    assert view["tokens"] == kv["tokens_before"] > kv["tokens_after"]
    # every cache keeps the same number of tokens, so the kept fractions sum to the kept tokens
    assert view["kept"] == pytest.approx(kv["tokens_after"] / kv["tokens_before"], abs=1 / 255)
    documents = {document["title"]: document for document in view["documents"]}
    document = documents["keeper"]  # an earlier test may have added "more"
    assert 0.0 <= document["kept"] <= 1.0
    assert document["spans"][0][0] == 0 and document["spans"][-1][1] == len(document["text"])
    assert all(0.0 <= chunk["kept"] <= 1.0 for chunk in document["chunks"])
    assert [row["number"] for row in view["retrieved"]] == [1, 2]
    assert all(row["evicted"] == (row["kept"] < 0.5 * view["kept"]) for row in view["retrieved"])
    assert len(view["warnings"]) == sum(row["evicted"] for row in view["retrieved"])


def test_compare_reports_retention_for_compressed_lc_only(
    tiny_server: RunningServer, collection: str
) -> None:
    body = {
        "question": "What did he count?",
        "collection": collection,
        "modes": ["rag", "lc", "lc:snapkv-0.5"],
        "max_tokens": 4,
        "retention": True,
    }
    response = api(tiny_server, "POST", "/v1/compare", json=body)
    assert response.status_code == 200, response.text
    rag, lc, compressed = response.json()["results"]
    assert rag["kv"] is None and lc["kv"] is None
    assert "keeper" in {document["title"] for document in compressed["kv"]["retention"]["documents"]}
