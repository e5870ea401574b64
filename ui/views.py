"""How answers, costs, citations and upload reports look in the page: pure functions of the API's JSON."""

from __future__ import annotations

import html
import json
import re
from collections.abc import Sequence
from typing import Any

import pandas as pd

from ui.retention_view import retention_html

WARNING = "⚠️"
BLANK_ANSWER = "*(the model answered with whitespace only)*"
CACHE_NOTES = {
    "hit": "**answered from the collection's compressed cache** (only the question was prefilled)",
    "built": "**compressed the collection's context into a cache** that later questions reuse",
}
CITATION_MARK = re.compile(r"\[(\d{1,3})\]")
CITATION_LINK = re.compile(r"\[\[(\d{1,3})\]\]\(#cite-[a-z]-\d{1,3}\)")
CHART_METRICS = {"ttft": "Time to first token (ms)", "total": "Latency (ms)", "kv": "KV cache (tokens)"}


def text_of(content: Any) -> str:
    """A chat message's text, whether Gradio holds it as a string or as a list of content parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return ""


def history_of(chat: Sequence[dict[str, Any]]) -> list[dict[str, str]]:
    """Earlier turns of a column as chat messages, leaving out failed turns (question and error)."""
    turns = [{"role": m["role"], "content": unlink_citations(text_of(m.get("content")))} for m in chat]
    kept: list[dict[str, str]] = []
    for turn in turns:
        if turn["role"] == "assistant" and turn["content"].startswith(WARNING):
            if kept and kept[-1]["role"] == "user":
                kept.pop()
            continue
        kept.append(turn)
    return kept


def error_note(message: str) -> str:
    return f"{WARNING} {message}"


def kv_tokens(result: dict[str, Any]) -> int | None:
    """Prompt tokens held in the KV cache: what eviction kept, or the whole prompt without eviction."""
    return result.get("kv_tokens") if result.get("kv_tokens") is not None else result.get("prompt_tokens")


def metrics_markdown(result: dict[str, Any]) -> str:
    """One line of costs under an answer (and, for auto, which route it took and why)."""
    if result.get("error"):
        return f"**{result['mode']}** failed ({result['error']['code']})"
    kv = kv_tokens(result)
    kv_text = "n/a" if kv is None else f"{kv} tokens"
    if result.get("kv_tokens") is None:
        kv_text += " (no eviction)"
    elif result.get("kv_blocks") is not None:
        kv_text += f", {result['kv_blocks']} blocks"
    line = (
        f"**TTFT** {_ms(result.get('ttft_ms'))} · **latency** {_ms(result.get('total_ms'))} · "
        f"**prompt** {result.get('prompt_tokens')} tokens · **KV** {kv_text}"
    )
    if result.get("prefill_ms") is not None:  # the engine's own split of this answer's time
        line += (
            f"  \n**engine**: queued {_ms(result.get('queue_ms'))} · prefill {_ms(result['prefill_ms'])} · "
            f"decode {_ms(result.get('decode_ms'))}"
        )
    cache = (result.get("kv") or {}).get("cache")
    if cache in CACHE_NOTES:
        line += f"  \n{CACHE_NOTES[cache]}"
    if result.get("route"):
        line += f"  \n**auto → {result['route']}**: {result.get('reason', '')}"
    return line


def citation_id(column: str, number: int) -> str:
    """The element id of citation `number` in answer column `column` (what a `[n]` link opens)."""
    return f"cite-{column}-{number}"


def link_citations(answer: str, column: str, numbers: Sequence[int]) -> str:
    """`answer` with each `[n]` that names one of `numbers` turned into a link to that citation."""
    cited = set(numbers)

    def link(match: re.Match[str]) -> str:
        number = int(match.group(1))
        return f"[[{number}]](#{citation_id(column, number)})" if number in cited else match.group(0)

    return CITATION_MARK.sub(link, answer)


def unlink_citations(text: str) -> str:
    """What `link_citations` made back into plain `[n]` (the history the model sees)."""
    return CITATION_LINK.sub(r"[\1]", text)


def citations_html(result: dict[str, Any], column: str = "a") -> str:
    """Each cited chunk as an expandable entry (id `cite-<column>-<n>`, which `[n]` in the answer opens):
    number, document, page, character offsets, score (and the reranker's); the chunk text when opened. A
    compressed LC answer shows its retention view instead (`ui.retention_view`)."""
    citations = result.get("citations") or []
    if result.get("error"):
        return ""
    if not citations:
        retention = (result.get("kv") or {}).get("retention")
        if retention and retention.get("documents") is not None:
            return retention_html(retention)
        return "<p class='no-citations'>No citations: the whole collection was in the context.</p>"
    items = []
    for c in citations:
        page = f", page {c['page']}" if c.get("page") else ""
        rerank = f" · rerank {c['rerank_score']:.2f}" if c.get("rerank_score") is not None else ""
        summary = (
            f"[{c['number']}] {c['title']}{page} · chunk {c['chunk_index']} · "
            f"characters {c['start']}-{c['end']} · score {c['score']:.2f}{rerank}"
        )
        items.append(
            f"<details class='citation' id='{citation_id(column, c['number'])}'>"
            f"<summary>{html.escape(summary)}</summary>"
            f"<div class='chunk'>{html.escape(c['text'])}</div></details>"
        )
    return "<div class='citations'>" + "".join(items) + "</div>"


def upload_markdown(lines: Sequence[str]) -> str:
    return "\n".join(f"- {line}" for line in lines)


def ingest_line(name: str, report: dict[str, Any]) -> str:
    stored = report["files"][0]
    return f"**{name}**: {stored['status']} ({stored['chunks']} chunks)"


def collection_markdown(info: dict[str, Any], caches: Sequence[dict[str, Any]] = ()) -> str:
    """Size and LC fit of a collection, and its compressed context caches (GET .../kv-cache)."""
    fits = "yes" if info["fits_lc"] else "**no** (use RAG or auto)"
    text = (
        f"{info['documents']} documents · {info['chunks']} chunks · {info['tokens']} tokens · "
        f"fits LC: {fits} ({info['lc_prompt_tokens']}/{info['lc_available_tokens']})"
    )
    for cache in caches:
        policy = json.loads(cache["policy"]).get("policy", cache["policy"])
        text += (
            f"  \ncompressed cache **{policy}-{cache['ratio']:g}**: {cache['tokens_before']} → "
            f"{cache['tokens_after']} tokens, {cache['bytes'] / 2**20:.1f} MiB, {cache['hits']} hits"
        )
    return text


def chart_frames(results: Sequence[dict[str, Any] | None]) -> list[pd.DataFrame]:
    """One small frame per metric in `CHART_METRICS` (columns `mode`, `value`), answered modes only."""
    answered = [r for r in results if r and not r.get("error")]
    values = {
        "ttft": [r.get("ttft_ms") for r in answered],
        "total": [r.get("total_ms") for r in answered],
        "kv": [kv_tokens(r) for r in answered],
    }
    return [
        pd.DataFrame(
            {"mode": [r["mode"] for r in answered], "value": [v or 0 for v in values[key]]},
        )
        for key in CHART_METRICS
    ]


def _ms(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:.0f} ms" if value < 10_000 else f"{value / 1000:.1f} s"


RAG_PROMPT_OVERHEAD_TOKENS = 120  # rag mode's instructions, citation headers and the question, about


def budget_markdown(
    info: dict[str, Any], bytes_per_token: float | None, top_k: int, ratio: float | None = None
) -> str:
    """Before asking: the collection's LC prompt against the window, and the KV memory an answer would hold
    in LC (whole, and compressed at `ratio` when given) and in RAG with `top_k` chunks (estimated from the
    collection's mean chunk size)."""
    lc, available = info["lc_prompt_tokens"], info["lc_available_tokens"]
    fits = "fits" if info["fits_lc"] else "**does not fit**: RAG or auto"
    line = f"**Budget** · LC prompt {lc:,} of {available:,} tokens ({fits})"
    chunk_tokens = info["tokens"] / info["chunks"] if info["chunks"] else 0
    rag = min(top_k, info["chunks"]) * chunk_tokens + RAG_PROMPT_OVERHEAD_TOKENS
    if bytes_per_token is None:
        return line + f" · RAG top-{top_k} ≈ {rag:,.0f} tokens · KV memory: n/a (server without KV eviction)"
    line += f" · KV held: LC {_mib(lc * bytes_per_token)}"
    if ratio is not None:
        line += f", LC evicting {ratio:g} {_mib(lc * (1 - ratio) * bytes_per_token)}"
    return line + f", RAG top-{top_k} ≈ {_mib(rag * bytes_per_token)}"


def _mib(value: float) -> str:
    return f"{value / 2**20:,.1f} MiB"
