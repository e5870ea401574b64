"""/v1/compare and the `auto` mode on the tiny-model server (random text: structure and routing only)."""

import json
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import RunningServer
from tests.integration.test_collections_api import api, town_files

pytestmark = pytest.mark.integration

UNRELATED = "How do quantum computers factor large integers?"


@pytest.fixture(scope="module")
def towns(tiny_server: RunningServer) -> Iterator[str]:
    with api(tiny_server) as client:
        assert client.post("/v1/collections", json={"name": "cmp-towns"}).status_code == 201
        assert (
            client.post("/v1/collections/cmp-towns/documents", files=town_files(range(2))).status_code == 200
        )
        yield "cmp-towns"
        client.delete("/v1/collections/cmp-towns")


@pytest.fixture(scope="module")
def big(tiny_server: RunningServer) -> Iterator[str]:
    """Six towns: over the tiny server's 512-token context in lc mode."""
    with api(tiny_server) as client:
        assert client.post("/v1/collections", json={"name": "cmp-big"}).status_code == 201
        assert client.post("/v1/collections/cmp-big/documents", files=town_files(range(6))).status_code == 200
        yield "cmp-big"
        client.delete("/v1/collections/cmp-big")


def compare(server: RunningServer, **body: Any) -> httpx.Response:
    with api(server) as client:
        return client.post("/v1/compare", json={"max_tokens": 6, **body})


def stream_compare(server: RunningServer, **body: Any) -> list[dict[str, Any]]:
    with (
        api(server) as client,
        client.stream("POST", "/v1/compare", json={"max_tokens": 6, "stream": True, **body}) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        data = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]
    assert data[-1] == "[DONE]"
    return [json.loads(item) for item in data[:-1]]


def test_compare_answers_each_mode_with_citations_and_costs(tiny_server: RunningServer, towns: str) -> None:
    response = compare(
        tiny_server, question="What is Brisk known for?", collection=towns, modes=["rag", "lc"], top_k=1
    )
    assert response.status_code == 200
    body = response.json()
    assert body["object"] == "compare" and body["model"] == tiny_server.model
    rag, lc = body["results"]
    assert (rag["mode"], lc["mode"]) == ("rag", "lc")
    assert rag["error"] is None and lc["error"] is None
    assert [c["title"] for c in rag["citations"]] == ["brisk"] and lc["citations"] == []
    assert lc["prompt_tokens"] > rag["prompt_tokens"] > 50
    for result in (rag, lc):
        assert result["answer"] and result["completion_tokens"] == 6
        assert 0 < result["ttft_ms"] <= result["total_ms"]
        assert result["kv"] is None and result["kv_tokens"] is None and result["route"] is None
        # the engine's own figures: inside the mode's wall time, each later token a decode step
        assert result["queue_ms"] >= 0 and result["prefill_ms"] > 0 and result["decode_ms"] >= 0.5 * 5
        assert result["queue_ms"] + result["prefill_ms"] <= result["ttft_ms"]
    assert rag["retrieval_ms"] > 0


def test_a_failing_mode_is_an_entry_and_the_others_still_answer(
    tiny_server: RunningServer, big: str, towns: str
) -> None:
    modes = ["rag", "lc", "lc:snapkv-0.75"]
    response = compare(tiny_server, question="Which town has a bridge?", collection=big, modes=modes)
    assert response.status_code == 200
    rag, lc, snap = response.json()["results"]
    assert rag["error"] is None and rag["answer"]
    assert lc["error"]["code"] == 400 and "only 506 are available" in lc["error"]["message"]
    assert lc["answer"] is None
    assert snap["error"]["code"] == 400  # eviction happens after prefill: the whole prompt must still fit
    kept = compare(
        tiny_server, question="Which town has a bridge?", collection=towns, modes=["lc:snapkv-0.75"]
    )
    (result,) = kept.json()["results"]
    assert result["error"] is None and result["kv"]["tokens_before"] == result["prompt_tokens"]
    assert result["kv_tokens"] == result["kv"]["tokens_after"] < result["prompt_tokens"]
    assert result["kv_blocks"] == result["kv"]["blocks_after"]


def test_streamed_compare_tags_every_event_with_its_mode(tiny_server: RunningServer, towns: str) -> None:
    events = stream_compare(
        tiny_server, question="Tell me about Arlen", collection=towns, modes=["rag", "lc"]
    )
    deltas = {mode: "".join(e["content"] for e in events if e["type"] == "delta" and e["mode"] == mode)
              for mode in ("rag", "lc")}  # fmt: skip
    results = {e["mode"]: e["result"] for e in events if e["type"] == "result"}
    assert results.keys() == {"rag", "lc"}
    assert all(deltas[mode] and deltas[mode] == results[mode]["answer"] for mode in ("rag", "lc"))
    assert results["rag"]["citations"][0]["title"] == "arlen"
    first_result = min(i for i, e in enumerate(events) if e["type"] == "result")
    assert any(e["type"] == "delta" for e in events[:first_result])


def test_isolated_timing_runs_the_modes_one_after_another(tiny_server: RunningServer, towns: str) -> None:
    """Each mode's cost is its own: no mode streams while another runs, each is timed from its own start."""
    events = stream_compare(
        tiny_server, question="Tell me about Arlen", collection=towns, modes=["lc", "rag"], timing="isolated"
    )
    order = [event["mode"] for event in events]
    assert order == sorted(order, key=["lc", "rag"].index)  # every lc event before the first rag one
    results = {e["mode"]: e["result"] for e in events if e["type"] == "result"}
    assert all(0 < results[m]["ttft_ms"] <= results[m]["total_ms"] for m in ("lc", "rag"))
    body = compare(tiny_server, question="Tell me about Arlen", collection=towns, modes=["rag", "lc"],
                   timing="isolated").json()  # fmt: skip
    assert [r["mode"] for r in body["results"]] == ["rag", "lc"] and all(r["answer"] for r in body["results"])


def test_a_model_the_server_does_not_serve_is_a_404_entry_per_mode(
    tiny_server: RunningServer, towns: str
) -> None:
    response = compare(
        tiny_server, question="Which town has a bridge?", collection=towns, model="no-such-model"
    )
    assert response.status_code == 200
    for result in response.json()["results"]:
        assert result["answer"] is None and result["error"]["code"] == 404
        assert "no-such-model" in result["error"]["message"]


@pytest.mark.parametrize(
    ("body", "status", "param", "phrase"),
    [
        ({"modes": ["rag", "fast"]}, 400, "modes.1", "unknown mode 'fast'"),
        ({"modes": ["lc:snapkv-2"]}, 400, "modes.0", "ratio in [0, 1)"),
        ({"modes": ["lc:nosuch-0.5"]}, 400, "modes.0", "nosuch"),
        ({"modes": ["rag", "rag"]}, 400, "modes.1", "listed twice"),
        ({"modes": []}, 400, None, "modes"),
        ({"question": "   "}, 400, None, "question"),
        ({"collection": "nope-nope"}, 404, "collection", "nope-nope"),
        ({"timing": "fair"}, 400, None, "isolated"),
        ({"repetition_penalty": 0}, 400, None, "repetition_penalty"),
        ({"retrieval": "sparse"}, 400, None, "retrieval"),
        ({"system_prompt": "x" * 4001}, 400, None, "system_prompt"),
    ],
)
def test_bad_compare_requests_are_openai_style_errors(
    tiny_server: RunningServer, towns: str, body: dict[str, Any], status: int, param: str | None, phrase: str
) -> None:
    response = compare(tiny_server, **{"question": "Hi there", "collection": towns, **body})
    assert response.status_code == status
    error = response.json()["error"]
    assert phrase in error["message"]
    if param is not None:
        assert error["param"] == param and error["code"] == status


def test_compare_passes_retrieval_system_prompt_and_repetition_penalty_to_every_mode(
    tiny_server: RunningServer, towns: str
) -> None:
    question = {"question": "blue wool", "collection": towns, "modes": ["rag", "lc"], "top_k": 1}
    plain = compare(tiny_server, **question).json()["results"]
    instructions = "Answer in one short sentence, in French, and name the town first."
    tuned = compare(tiny_server, **question, retrieval="bm25", system_prompt=instructions,
                    repetition_penalty=1.3).json()["results"]  # fmt: skip
    assert all(r["error"] is None for r in tuned)
    assert "blue wool" in tuned[0]["citations"][0]["text"]  # BM25's first hit
    for before, after in zip(plain, tuned, strict=True):  # the instructions are in both modes' prompts
        assert after["prompt_tokens"] - before["prompt_tokens"] >= len(instructions.split())
    repeated = {**question, "modes": ["lc"], "max_tokens": 24}
    greedy = compare(tiny_server, **repeated).json()["results"][0]["answer"]
    penalised = compare(tiny_server, **repeated, repetition_penalty=1.8).json()["results"][0]["answer"]
    assert greedy != penalised  # the penalty reached vLLM's sampler


def test_compare_needs_the_api_key(tiny_server: RunningServer, towns: str) -> None:
    response = httpx.post(f"{tiny_server.base_url}/v1/compare", json={"question": "Hi", "collection": towns})
    assert response.status_code == 401


@pytest.fixture(scope="module")
def client(tiny_server: RunningServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{tiny_server.base_url}/v1", api_key=tiny_server.api_key, max_retries=0)


def test_auto_answers_a_question_its_chunks_cover_with_rag(client: openai.OpenAI, towns: str) -> None:
    reply = client.chat.completions.create(
        model=f"{towns}@auto",
        messages=[{"role": "user", "content": "What is Brisk known for?"}],
        max_tokens=4,
    )
    extra = reply.model_extra["lcrag"]  # type: ignore[index]
    assert extra["mode"] == "auto" and extra["route"] == "rag"
    assert "answered it (best score" in extra["reason"] and extra["probe_ms"] > 0
    assert extra["citations"][0]["title"] == "brisk"
    assert extra["prompt_tokens"] == reply.usage.prompt_tokens  # type: ignore[union-attr]


def test_auto_goes_to_lc_when_retrieval_finds_nothing_close(
    client: openai.OpenAI, tiny_server: RunningServer, towns: str
) -> None:
    reply = client.chat.completions.create(
        model=tiny_server.model,
        messages=[{"role": "user", "content": UNRELATED}],
        max_tokens=4,
        extra_body={"lcrag": {"collection": towns, "mode": "auto"}},
    )
    extra = reply.model_extra["lcrag"]  # type: ignore[index]
    assert extra["route"] == "lc" and extra["citations"] == []
    assert "best retrieval score" in extra["reason"] and "< 0.30" in extra["reason"]
    assert reply.usage.prompt_tokens > 200  # type: ignore[union-attr]  # the whole collection


def test_auto_stays_with_rag_when_lc_would_not_fit(client: openai.OpenAI, big: str) -> None:
    reply = client.chat.completions.create(
        model=f"{big}@auto", messages=[{"role": "user", "content": UNRELATED}], max_tokens=4
    )
    extra = reply.model_extra["lcrag"]  # type: ignore[index]
    assert extra["route"] == "rag" and "does not fit lc" in extra["reason"]


def test_streamed_auto_carries_route_in_the_first_chunk(tiny_server: RunningServer, towns: str) -> None:
    body = {"model": f"{towns}@auto", "messages": [{"role": "user", "content": UNRELATED}],
            "max_tokens": 4, "stream": True}  # fmt: skip
    with api(tiny_server) as c, c.stream("POST", "/v1/chat/completions", json=body) as response:
        assert response.status_code == 200
        events = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]
    chunks = [json.loads(event) for event in events[:-1]]
    assert chunks[0]["lcrag"]["route"] == "lc" and chunks[0]["lcrag"]["mode"] == "auto"
    assert "timings" in chunks[-1]["lcrag"]


def test_compare_reports_which_mode_auto_chose(tiny_server: RunningServer, towns: str) -> None:
    response = compare(tiny_server, question=UNRELATED, collection=towns, modes=["auto", "rag"])
    auto, rag = response.json()["results"]
    assert auto["route"] == "lc" and "best retrieval score" in auto["reason"]
    assert rag["route"] is None and auto["error"] is None


def test_models_lists_auto_next_to_rag_and_lc(client: openai.OpenAI, towns: str) -> None:
    ids = {card.id for card in client.models.list().data}
    assert {f"{towns}@rag", f"{towns}@lc", f"{towns}@auto"} <= ids
