"""What lcrag's routes and middleware share: the store, the embedder, the served model's tokenizer and
context length. Built once at start-up; the embedder loads on first use so start-up stays fast."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING

from compression.spec import KVSpec
from lcrag.settings import Settings
from rag.control_text import ControlStrings
from rag.embeddings import Embedder
from rag.ingest import Ingestor
from rag.lexical import LexicalIndexes
from rag.rerank import Reranker
from rag.retrieve import RetrievalOptions
from rag.store import Store
from server.errors import BadRequestError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from compression.vllm_integration.outputs import EngineTimings
    from compression.vllm_integration.stats import KVStatsLedger
    from server.kv_cache import ContextCaches

log = logging.getLogger("lcrag.server")


def open_store(settings: Settings) -> Store:
    """The collection store, with what interrupted ingests left removed; raises RagError (a store in use
    by another process, an unreadable one) before anything slow starts."""
    store = Store.open(path=str(settings.chroma_dir), url=settings.chroma_url)
    for name in store.list_collections():
        removed = store.remove_incomplete(name)
        if removed:
            log.info("removed %d chunks an interrupted ingest left in collection %s", removed, name)
    return store


@dataclass
class Services:
    settings: Settings
    store: Store
    tokenizer: PreTrainedTokenizerBase
    served_model: str
    max_model_len: int
    kv_stats: KVStatsLedger | None = None  # set when vLLM runs with lcrag's eviction scheduler and worker
    context_caches: ContextCaches | None = None  # likewise
    engine_timings: EngineTimings | None = None  # the engine's queue / prefill / decode times per request
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def build(
        cls, settings: Settings, store: Store, model_path: str, served_model: str, max_model_len: int
    ) -> Services:
        from transformers import AutoTokenizer

        return cls(settings, store, AutoTokenizer.from_pretrained(model_path), served_model, max_model_len)

    @cached_property
    def _embedder(self) -> Embedder:
        embedder = Embedder(self.settings.embedder)
        embedder.embed(["load"])  # load the model now, under the lock
        return embedder

    @property
    def embedder(self) -> Embedder:
        with self._lock:
            return self._embedder

    @property
    def ingestor(self) -> Ingestor:
        return Ingestor(self.store, self.embedder, self.tokenizer)

    @cached_property
    def lexical(self) -> LexicalIndexes:
        """The collections' BM25 indexes (bm25 and hybrid retrieval), built on first use."""
        return LexicalIndexes(self.store)

    @cached_property
    def reranker(self) -> Reranker | None:
        """The cross-encoder of `--reranker`, None without one (it loads on first use)."""
        return Reranker(self.settings.reranker) if self.settings.reranker else None

    def retrieval_options(
        self,
        retrieval: str | None,
        order: str | None,
        min_score: float | None,
        mmr_lambda: float | None = None,
        rerank: bool | None = None,
    ) -> RetrievalOptions:
        """A request's retrieval choices, the server's defaults where it names none (reranking whenever
        the server has a reranker); raises BadRequestError for a rerank the server cannot do."""
        if rerank and self.reranker is None:
            raise BadRequestError(
                "'rerank' needs a cross-encoder: start the server with --reranker PATH (LCRAG_RERANKER).",
                param="rerank",
            )
        return RetrievalOptions(
            retrieval or self.settings.retrieval,  # type: ignore[arg-type]
            order or self.settings.retrieval_order,  # type: ignore[arg-type]
            min_score,
            mmr_lambda,
            self.reranker is not None if rerank is None else rerank,
        )

    @cached_property
    def control_strings(self) -> ControlStrings:
        """The served tokenizer's control strings, which documents must not contain in a prompt."""
        return ControlStrings.of(self.tokenizer)

    @cached_property
    def default_kv(self) -> KVSpec | None:
        """The server's default eviction (`--kv-policy/--kv-ratio`), None when it evicts nothing."""
        kv = KVSpec(policy=self.settings.kv_policy, ratio=self.settings.kv_ratio)
        return kv if kv.evicts else None

    def lc_available_tokens(self, answer_tokens: int | None = None) -> int:
        return self.max_model_len - (answer_tokens or self.settings.answer_tokens)
