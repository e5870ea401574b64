"""A collection as training material: its documents (for in2), its chunks and a retriever over them (for
multidoc, whose hard negatives come from our own RAG pipeline: the same embedder and Chroma store).

Only the training side of the collection's split (`finetune.holdout`) is material: held-out documents (or
chunks) never reach an example, so `lcrag eval collection` can ask about them afterwards.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from itertools import groupby
from typing import TYPE_CHECKING

from finetune.data.multidoc import CorpusChunk
from finetune.holdout import HOLDOUT_SEED, HOLDOUT_SHARE, Holdout, holdout

if TYPE_CHECKING:
    from rag.embeddings import Embedder
    from rag.store import Store, StoredChunk


@dataclass(frozen=True)
class CollectionCorpus:
    store: Store
    embedder: Embedder
    name: str
    holdout_seed: int = HOLDOUT_SEED
    holdout_share: float = HOLDOUT_SHARE  # 0 trains on everything

    @cached_property
    def split(self) -> Holdout:
        indexes: dict[str, list[int]] = {}
        for stored in self._all_chunks:
            indexes.setdefault(stored.doc_id, []).append(stored.chunk.index)
        return holdout(indexes, self.holdout_seed, self.holdout_share)

    @cached_property
    def _all_chunks(self) -> list[StoredChunk]:
        return self.store.chunks(self.name)

    @cached_property
    def _training_chunks(self) -> list[StoredChunk]:
        return [s for s in self._all_chunks if not self.split.holds(s.doc_id, s.chunk.index)]

    def documents(self) -> list[tuple[str, str]]:
        """(title, text) of every document with training chunks, in upload order (when single chunks are held
        out, a document's text is rebuilt from its other chunks)."""
        from rag.chunking import join_chunks

        return [
            (members[0].doc_title, join_chunks([s.chunk for s in members]))
            for _, group in groupby(self._training_chunks, key=lambda s: s.doc_id)
            if (members := list(group))
        ]

    def chunks(self) -> list[CorpusChunk]:
        return [
            CorpusChunk(f"{s.doc_id}:{s.chunk.index}", s.chunk.text, s.chunk.tokens, s.doc_title)
            for s in self._training_chunks
        ]

    def retrieve(self, query: str, k: int) -> list[str]:
        """Ids of the `k` training chunks nearest to `query`, most similar first."""
        from rag.retrieve import retrieve

        held = len(self._all_chunks) - len(self._training_chunks)
        citations = retrieve(self.store, self.embedder, self.name, query, k + held)  # enough after the filter
        kept = [c for c in citations if not self.split.holds(c.doc_id, c.chunk_index)]
        return [f"{citation.doc_id}:{citation.chunk_index}" for citation in kept[:k]]
