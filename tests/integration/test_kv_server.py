"""KV eviction through the OpenAI server: `lcrag.kv` (or a `docs@lc:policy-ratio` model name) reaches the
engine, the response reports the engine's real counts, /metrics counts evicted tokens and freed blocks,
and bad settings are 400s naming the field. The tiny server runs vLLM's default CPU block size (128)."""

from __future__ import annotations

import json
import re

import httpx
import openai
import pytest

from compression.registry import create
from tests.conftest import RunningServer
from tests.kv_engine import engine_kept

pytestmark = pytest.mark.integration
CPU_BLOCK_SIZE = 128
PROMPT = "The old lighthouse keeper counted ships every night. " * 40  # ~400 tokens


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


@pytest.fixture(scope="module")
def client(tiny_server: RunningServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{tiny_server.base_url}/v1", api_key=tiny_server.api_key, max_retries=0)


def metric(server: RunningServer, name: str) -> float:
    text = httpx.get(f"{server.base_url}/metrics", headers=server.headers(), timeout=30).text
    found = re.search(rf"^{name} ([0-9.e+]+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def expected_kv(policy: str, ratio: float, prompt_tokens: int, **options: object) -> dict[str, object]:
    kept = engine_kept(prompt_tokens, create(policy, **options), ratio, CPU_BLOCK_SIZE)
    return {
        "policy": policy,
        "ratio": ratio,
        "tokens_before": prompt_tokens,
        "tokens_after": kept,
        "blocks_before": cdiv(prompt_tokens, CPU_BLOCK_SIZE),
        "blocks_after": cdiv(kept, CPU_BLOCK_SIZE),
        "cache": "none",
    }


def test_chat_with_kv_eviction_reports_the_engines_counts(
    client: openai.OpenAI, tiny_server: RunningServer
) -> None:
    evicted_before = metric(tiny_server, "lcrag_kv_evicted_tokens_total")
    freed_before = metric(tiny_server, "lcrag_kv_freed_blocks_total")
    reply = client.chat.completions.create(
        model=tiny_server.model,
        messages=[{"role": "user", "content": PROMPT}],
        max_tokens=8,
        temperature=0,
        extra_body={"lcrag": {"kv": {"policy": "snapkv", "ratio": 0.75, "window": 16}}},
    )
    assert reply.usage is not None and reply.usage.completion_tokens == 8
    kv = reply.model_extra["lcrag"]["kv"]  # type: ignore[index]
    assert kv == expected_kv("snapkv", 0.75, reply.usage.prompt_tokens, window=16)
    assert "kv_transfer_params" not in (reply.model_extra or {})
    evicted = metric(tiny_server, "lcrag_kv_evicted_tokens_total") - evicted_before
    freed = metric(tiny_server, "lcrag_kv_freed_blocks_total") - freed_before
    assert evicted == kv["tokens_before"] - kv["tokens_after"]
    assert freed == kv["blocks_before"] - kv["blocks_after"] > 0


def test_streamed_completion_with_kv_eviction_reports_counts_in_the_last_event(
    tiny_server: RunningServer,
) -> None:
    body = {
        "model": tiny_server.model,
        "prompt": PROMPT,
        "max_tokens": 6,
        "temperature": 0,
        "stream": True,
        "lcrag": {"kv": {"policy": "streaming_llm", "ratio": 0.5, "sinks": 4}},
    }
    with httpx.stream(
        "POST", f"{tiny_server.base_url}/v1/completions", json=body, headers=tiny_server.headers(), timeout=60
    ) as response:
        assert response.status_code == 200
        events = [line[len("data: ") :] for line in response.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(event) for event in events[:-1]]
    assert all("lcrag" not in chunk for chunk in chunks[:-1])
    kv = chunks[-1]["lcrag"]["kv"]
    kept = engine_kept(kv["tokens_before"], create("streaming_llm", sinks=4), 0.5, CPU_BLOCK_SIZE)
    assert kv["policy"] == "streaming_llm" and kv["tokens_after"] == kept
    assert kv["tokens_before"] > 300 and kv["blocks_after"] < kv["blocks_before"]


def test_kv_in_the_model_name_and_collection_modes_combine(
    client: openai.OpenAI, tiny_server: RunningServer
) -> None:
    """`kvdocs@lc:snapkv-0.5` compresses each prompt; a query-agnostic `kvdocs@lc:knorm-0.5` compresses the
    collection's context once (the first question builds the cache, the next adopts it)."""
    headers = tiny_server.headers()
    base = tiny_server.base_url
    httpx.post(f"{base}/v1/collections", json={"name": "kvdocs"}, headers=headers, timeout=30)
    files = {"files": ("keeper.txt", PROMPT.encode(), "text/plain")}
    upload = httpx.post(f"{base}/v1/collections/kvdocs/documents", files=files, headers=headers, timeout=120)
    assert upload.status_code == 200, upload.text
    question = [{"role": "user", "content": "What did the keeper count?"}]
    reply = client.chat.completions.create(model="kvdocs@lc:snapkv-0.5", messages=question, max_tokens=4)
    extra = reply.model_extra or {}
    assert extra["lcrag"]["mode"] == "lc" and extra["lcrag"]["kv"]["policy"] == "snapkv"
    assert reply.usage is not None
    assert extra["lcrag"]["kv"] == expected_kv("snapkv", 0.5, reply.usage.prompt_tokens)
    caches = []
    for _ in range(2):
        reply = client.chat.completions.create(model="kvdocs@lc:knorm-0.5", messages=question, max_tokens=4)
        caches.append((reply.model_extra or {})["lcrag"]["kv"])
    assert [kv["cache"] for kv in caches] == ["built", "hit"]
    assert reply.usage is not None and caches[0]["tokens_before"] < reply.usage.prompt_tokens
    assert (
        caches[0]["tokens_after"] == caches[1]["tokens_after"] == CPU_BLOCK_SIZE * caches[0]["blocks_after"]
    )


@pytest.mark.parametrize(
    ("request_part", "param", "phrase"),
    [
        ({"lcrag": {"kv": {"policy": "snapkv", "ratio": 1.0}}}, "lcrag.kv.ratio", "less than 1"),
        ({"lcrag": {"kv": {"policy": "snapkvv", "ratio": 0.5}}}, "lcrag.kv", "available: "),
        ({"lcrag": {"kv": {"policy": "knorm", "ratio": 0.5, "window": 8}}}, "lcrag.kv", "no option window"),
        (
            {"lcrag": {"kv": {"policy": "chunkkv", "ratio": 0.5, "options": {"chunk": 0}}}},
            "lcrag.kv",
            "chunk",
        ),
        (
            {"lcrag": {"kv": {"policy": "snapkv", "ratio": 0.5, "options": {"kernal": 3}}}},
            "lcrag.kv",
            "kernal",
        ),
        (
            {"lcrag": {"kv": {"policy": "snapkv", "ratio": 0.5, "cache": True}}},
            "lcrag.kv.cache",
            "query-agnostic",
        ),
        ({"model": "kvdocs@lc:snapkv-lots"}, "model", "write '<policy>-<ratio>'"),
        ({"model": "kvdocs@lc:nope-0.5"}, "model", "Unknown KV policy 'nope'"),
        (  # kvzip's reconstruction passes need the prompt as plain-text messages lcrag renders itself
            {
                "messages": [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}],
                "lcrag": {"kv": {"policy": "kvzip", "ratio": 0.5}},
            },
            "lcrag.kv.policy",
            "whose messages are plain text",
        ),
    ],
)
def test_bad_kv_settings_are_400s_naming_the_field(
    tiny_server: RunningServer, request_part: dict[str, object], param: str, phrase: str
) -> None:
    body = {"model": tiny_server.model, "messages": [{"role": "user", "content": "Hi"}], **request_part}
    response = httpx.post(
        f"{tiny_server.base_url}/v1/chat/completions", json=body, headers=tiny_server.headers(), timeout=30
    )
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == param and phrase in error["message"]


@pytest.mark.parametrize(
    ("lcrag", "param", "phrase"),
    [
        ({"collection": "kvdocs"}, "lcrag.collection", "send the question as chat messages"),
        ({"kv": {"policy": "kvzip", "ratio": 0.5}}, "lcrag.kv.policy", "reconstruction passes"),
    ],
)
def test_completions_refuse_what_only_chat_requests_can_do(
    tiny_server: RunningServer, lcrag: dict[str, object], param: str, phrase: str
) -> None:
    body = {"model": tiny_server.model, "prompt": "Hi", "max_tokens": 2, "lcrag": lcrag}
    response = httpx.post(
        f"{tiny_server.base_url}/v1/completions", json=body, headers=tiny_server.headers(), timeout=30
    )
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == param and phrase in error["message"]
