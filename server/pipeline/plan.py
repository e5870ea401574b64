"""What the pipeline decided for one chat request, in plain data: the prompt the engine is handed (token ids,
the context boundary), what the reply reports (mode, citations, route, timings) and the KV work."""

from __future__ import annotations

from dataclasses import dataclass, field

from compression.spec import KVSpec, KVTask
from rag.context import LcDocument, RenderedPrompt
from rag.retrieve import Citation


@dataclass(frozen=True)
class AutoRoute:
    """Which mode `auto` answered with, and why (reported in the response's `lcrag` field)."""

    route: str  # "rag" or "lc"
    reason: str
    probe_ms: float = 0.0  # time spent on the RAG attempt that decided


@dataclass
class ModePrompt:
    """A mode's prompt over a collection: `rag` (retrieved chunks, cited) or `lc` (the whole collection)."""

    mode: str
    collection: str
    prompt: RenderedPrompt
    question: str
    citations: list[Citation] = field(default_factory=list)
    documents: list[LcDocument] = field(default_factory=list)  # lc: the documents as the prompt shows them
    retrieval_ms: float = 0.0
    route: AutoRoute | None = None  # auto: which mode this prompt is, and why

    @property
    def reported_mode(self) -> str:
        return "auto" if self.route is not None else self.mode


@dataclass(frozen=True)
class ChatPlan:
    """One request's plan: its collection prompt (None for a plain chat) and its KV eviction (None when it
    evicts nothing)."""

    prompt: ModePrompt | None
    kv: KVSpec | None

    def kv_task(self) -> KVTask | None:
        """An lc prompt with a query-agnostic policy compresses its collection's context once, as a cache
        later questions adopt; any other prompt is compressed on its own."""
        if self.kv is None:
            return None
        prompt = self.prompt
        if prompt is not None and prompt.mode == "lc" and self.kv.shares_context:
            context = prompt.prompt.context_tokens
            if context is not None:
                return self.kv.task(context, prompt.collection)
        return self.kv.task()
