"""A collection as training material: its documents (for in2), its chunks and a retriever over them (for
multidoc, whose hard negatives come from our own RAG pipeline: the same embedder and Chroma store)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from finetune.data.multidoc import CorpusChunk

if TYPE_CHECKING:
    from rag.embeddings import Embedder
    from rag.store import Store


@dataclass(frozen=True)
class CollectionCorpus:
    store: Store
    embedder: Embedder
    name: str

    def documents(self) -> list[tuple[str, str]]:
        """(title, text) of every complete document, in upload order."""
        from rag.context import lc_documents

        return [(document.title, document.text) for document in lc_documents(self.store, self.name)]

    def chunks(self) -> list[CorpusChunk]:
        return [
            CorpusChunk(f"{stored.doc_id}:{stored.chunk.index}", stored.chunk.text, stored.chunk.tokens)
            for stored in self.store.chunks(self.name)
        ]

    def retrieve(self, query: str, k: int) -> list[str]:
        """Chunk ids of the `k` chunks nearest to `query`, most similar first."""
        from rag.retrieve import retrieve

        citations = retrieve(self.store, self.embedder, self.name, query, k)
        return [f"{citation.doc_id}:{citation.chunk_index}" for citation in citations]
