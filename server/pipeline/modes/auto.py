"""`auto` mode: Self-Route (Li et al., 2024, "Retrieval Augmented Generation or Long-Context LLMs?").

RAG first: retrieve, and if even the best chunk scores below `LCRAG_AUTO_MIN_SCORE`, go straight to LC.
Otherwise ask the model, with the retrieved chunks, to answer or to reply `UNANSWERABLE`; that attempt is
a short greedy generation on the engine, in this process (`LCRAG_AUTO_PROBE_TOKENS`). On the marker,
answer with LC; else answer with the same RAG prompt (so its prefix is the one just computed). The
client's own request, streamed or not, then runs on the chosen prompt, and the response's `lcrag` field
carries `route` and `reason`.

When LC is chosen but the collection does not fit the context, the answer stays with RAG and the reason
says so; when the attempt itself fails, the answer stays with RAG too, and its request reports the error.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from typing import Any

from starlette.concurrency import run_in_threadpool

from rag.context import SELF_ROUTE_INSTRUCTIONS, UNANSWERABLE
from rag.errors import ContextTooLongError
from server.pipeline.modes.lc import plan_lc
from server.pipeline.modes.rag import plan_rag
from server.pipeline.plan import AutoRoute, ModePrompt
from server.schemas import LcragOptions
from server.services import Services

Probe = Callable[[list[int], int], Awaitable[str | None]]
"""Runs the model greedily on prompt token ids with a token limit; the answer text, or None if it failed."""


def says_unanswerable(answer: str) -> bool:
    """Whether the model's answer carries the Self-Route marker (any case, anywhere)."""
    return UNANSWERABLE.lower() in answer.lower()


def best_score(prompt: ModePrompt) -> float | None:
    return max((c.score for c in prompt.citations), default=None)


async def plan_auto(
    services: Services,
    options: LcragOptions,
    collection: str,
    messages: Sequence[Any],
    max_tokens: int | None,
    probe: Probe,
) -> ModePrompt:
    """Choose rag or lc for this question as described above; the prompt to answer with, route attached."""
    rag = await run_in_threadpool(
        plan_rag, services, options, collection, messages, max_tokens, SELF_ROUTE_INSTRUCTIONS
    )
    score, min_score = best_score(rag), services.settings.auto_min_score
    if score is None or score < min_score:
        found = "no chunks" if score is None else f"best retrieval score {score:.2f}"
        return await _try_lc(services, collection, messages, max_tokens, rag, f"{found} < {min_score:.2f}")
    started = time.perf_counter()
    answer = await probe(rag.prompt.token_ids, services.settings.auto_probe_tokens)
    probe_ms = (time.perf_counter() - started) * 1000.0
    if answer is None:
        return _routed(rag, "rag", "the RAG attempt failed; its error is the answer", probe_ms)
    if says_unanswerable(answer):
        why = f"RAG answer was {UNANSWERABLE}"
        return await _try_lc(services, collection, messages, max_tokens, rag, why, probe_ms)
    return _routed(rag, "rag", f"the retrieved chunks answered it (best score {score:.2f})", probe_ms)


async def _try_lc(
    services: Services,
    collection: str,
    messages: Sequence[Any],
    max_tokens: int | None,
    rag: ModePrompt,
    why: str,
    probe_ms: float = 0.0,
) -> ModePrompt:
    try:
        lc = await run_in_threadpool(plan_lc, services, collection, messages, max_tokens)
    except ContextTooLongError as error:
        reason = f"{why}, but the collection does not fit lc ({error.needed} > {error.available} tokens)"
        return _routed(rag, "rag", reason, probe_ms)
    lc.retrieval_ms += rag.retrieval_ms
    return _routed(lc, "lc", why, probe_ms)


def _routed(prompt: ModePrompt, route: str, reason: str, probe_ms: float) -> ModePrompt:
    return replace(prompt, route=AutoRoute(route, reason, round(probe_ms, 2)))
