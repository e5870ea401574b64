"""What the UI shows, from the API's JSON: costs, routes, citations, history and chart data."""

import pytest

from server.pipeline.request import parse_mode_spec
from ui import views

RESULT = {
    "mode": "auto", "answer": "Seven arches.", "prompt_tokens": 120, "ttft_ms": 85.4, "total_ms": 12_345.0,
    "kv_tokens": None, "kv_blocks": None, "route": "rag", "reason": "the retrieved chunks answered it",
    "citations": [{"number": 1, "title": "brisk <b>", "chunk_index": 2, "page": 3, "score": 0.6543,
                   "start": 120, "end": 480,
                   "text": "A bridge <script>x</script>"}],
    "error": None,
}  # fmt: skip


def test_metrics_show_costs_and_the_auto_route() -> None:
    line = views.metrics_markdown(RESULT)
    assert "**TTFT** 85 ms" in line and "**latency** 12.3 s" in line and "**prompt** 120 tokens" in line
    assert "**KV** 120 tokens (no eviction)" in line
    assert "**auto → rag**: the retrieved chunks answered it" in line
    assert "engine" not in line  # a server that did not report the engine's figures


def test_metrics_split_the_engines_time() -> None:
    line = views.metrics_markdown({**RESULT, "queue_ms": 0.0, "prefill_ms": 1234.5, "decode_ms": 10_250.0})
    assert "**engine**: queued 0 ms · prefill 1234 ms · decode 10.2 s" in line


def test_metrics_show_what_eviction_kept() -> None:
    line = views.metrics_markdown({**RESULT, "kv_tokens": 30, "kv_blocks": 1, "route": None})
    assert "**KV** 30 tokens, 1 blocks" in line and "auto" not in line


@pytest.mark.parametrize(
    ("cache", "note"),
    [
        ("hit", "answered from the collection's compressed cache"),
        ("built", "compressed the collection's context into a cache"),
    ],
)
def test_metrics_say_whether_a_compressed_collection_cache_answered(cache: str, note: str) -> None:
    kv = {"policy": "kvzip", "ratio": 0.75, "cache": cache}
    assert note in views.metrics_markdown({**RESULT, "kv_tokens": 768, "kv_blocks": 24, "kv": kv})
    assert "cache" not in views.metrics_markdown({**RESULT, "kv": {**kv, "cache": "none"}})


def test_a_collection_lists_its_compressed_caches() -> None:
    info = {"documents": 2, "chunks": 9, "tokens": 5000, "fits_lc": True, "lc_prompt_tokens": 5100,
            "lc_available_tokens": 7900}  # fmt: skip
    cache = {"policy": '{"policy": "kvzip", "chunk": 1}', "ratio": 0.875, "tokens_before": 5100,
             "tokens_after": 640, "bytes": 29_491_200, "hits": 3}  # fmt: skip
    text = views.collection_markdown(info, [cache])
    assert "compressed cache **kvzip-0.875**: 5100 → 640 tokens, 28.1 MiB, 3 hits" in text
    assert "compressed cache" not in views.collection_markdown(info)


def test_citations_expand_to_their_escaped_chunk_text() -> None:
    markup = views.citations_html(RESULT, "b")
    assert markup.count("<details") == 1 and "id='cite-b-1'" in markup
    assert "[1] brisk &lt;b&gt;, page 3 · chunk 2 · characters 120-480 · score 0.65" in markup
    assert "A bridge &lt;script&gt;" in markup and "<script>" not in markup
    reranked = {**RESULT, "citations": [{**RESULT["citations"][0], "rerank_score": 0.912}]}
    assert "score 0.65 · rerank 0.91" in views.citations_html(reranked)


def test_citation_marks_link_to_their_citation_and_back_to_plain_text_for_history() -> None:
    answer = "Seven arches [1], a mill [2][3] and [7] (not cited), see [1]."
    linked = views.link_citations(answer, "a", [1, 2, 3])
    assert linked == (
        "Seven arches [[1]](#cite-a-1), a mill [[2]](#cite-a-2)[[3]](#cite-a-3) and [7] (not cited), "
        "see [[1]](#cite-a-1)."
    )
    assert views.unlink_citations(linked) == answer
    chat = [{"role": "user", "content": "q"}, {"role": "assistant", "content": linked}]
    assert views.history_of(chat)[1]["content"] == answer


def test_lc_answers_say_there_are_no_citations() -> None:
    assert "whole collection" in views.citations_html({**RESULT, "citations": []})


def test_history_leaves_out_failed_turns_and_flattens_gradio_content() -> None:
    chat = [
        {"role": "user", "content": [{"type": "text", "text": "first?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "one"}]},
        {"role": "user", "content": "second?"},
        {"role": "assistant", "content": views.error_note("LC over budget")},
    ]
    assert views.history_of(chat) == [
        {"role": "user", "content": "first?"},
        {"role": "assistant", "content": "one"},
    ]


def test_chart_frames_skip_failed_modes() -> None:
    failed = {"mode": "lc", "error": {"message": "x", "code": 400}}
    ttft, total, kv = views.chart_frames([RESULT, failed, None])
    assert list(ttft["mode"]) == ["auto"] and list(ttft["value"]) == [85.4]
    assert list(total["value"]) == [12_345.0] and list(kv["value"]) == [120]


@pytest.mark.parametrize(
    ("spec", "mode", "policy", "ratio"),
    [("rag", "rag", None, None), ("auto", "auto", None, None), ("lc:snapkv-0.75", "lc", "snapkv", 0.75),
     ("lc:streaming_llm-0.5", "lc", "streaming_llm", 0.5)],
)  # fmt: skip
def test_mode_specs_name_a_mode_and_optional_eviction(
    spec: str, mode: str, policy: str | None, ratio: float | None
) -> None:
    parsed_mode, kv = parse_mode_spec(spec)
    assert parsed_mode == mode
    assert (kv.policy, kv.ratio) == (policy, ratio) if kv else policy is None


@pytest.mark.parametrize("spec", ["fast", "lc:snapkv", "lc:snapkv-1.0", "lc:-0.5", "RAG"])
def test_bad_mode_specs_are_refused(spec: str) -> None:
    with pytest.raises(ValueError):
        parse_mode_spec(spec)


def test_the_budget_line_compares_lc_compressed_lc_and_rag_memory() -> None:
    info = {"documents": 3, "chunks": 10, "tokens": 2000, "fits_lc": True, "lc_prompt_tokens": 2300,
            "lc_available_tokens": 7680}  # fmt: skip
    bytes_per_token = 46_080.0  # SmolLM2-135M in float32: 30 layers x 3 KV heads x 64 x 2 x 4 bytes
    line = views.budget_markdown(info, bytes_per_token, top_k=5, ratio=0.75)
    assert "LC prompt 2,300 of 7,680 tokens (fits)" in line
    assert "LC 101.1 MiB" in line  # 2300 x 46080 / 2**20
    assert "LC evicting 0.75 25.3 MiB" in line
    assert "RAG top-5 ≈ 49.2 MiB" in line  # (5 x 200 + 120) x 46080 / 2**20
    too_big = views.budget_markdown({**info, "fits_lc": False}, None, top_k=20)
    assert "does not fit" in too_big and "RAG top-20 ≈ 2,120 tokens" in too_big and "n/a" in too_big
