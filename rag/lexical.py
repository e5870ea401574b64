"""BM25 over a collection's chunks, for lexical and hybrid retrieval.

Embedded Chroma 1.5.9 has no sparse index ("Sparse vector indexing is not enabled in local"), so the BM25
index is `bm25s`, built in memory from the chunks Chroma holds. It stays in step with Chroma by a
fingerprint of the collection's complete documents (their ids and chunk counts): any write or delete,
by this process or another one sharing a `chroma run` server, changes it, and the next search rebuilds
the index from Chroma. Only complete documents are indexed, as in dense retrieval.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass

import numpy as np

from rag.store import Store, StoredChunk

WORD = re.compile(r"\w\w+")  # words of two or more letters or digits


def terms(text: str, stopwords: frozenset[str]) -> list[str]:
    """Lower-cased words of `text`, stop words dropped."""
    return [word for word in WORD.findall(text.lower()) if word not in stopwords]


def english_stopwords() -> frozenset[str]:
    from bm25s.stopwords import STOPWORDS_EN

    return frozenset(STOPWORDS_EN)


@dataclass
class LexicalIndex:
    """One collection's chunks and their BM25 index."""

    fingerprint: tuple[tuple[str, int], ...]
    chunks: list[StoredChunk]
    bm25: object | None  # bm25s.BM25; None when no chunk has an indexable word
    stopwords: frozenset[str]

    @classmethod
    def build(cls, fingerprint: tuple[tuple[str, int], ...], chunks: list[StoredChunk]) -> LexicalIndex:
        import bm25s

        stopwords = english_stopwords()
        corpus = [terms(stored.chunk.text, stopwords) for stored in chunks]
        if not any(corpus):
            return cls(fingerprint, chunks, None, stopwords)
        bm25 = bm25s.BM25()
        bm25.index([words or ["\0"] for words in corpus], show_progress=False)  # keep positions aligned
        return cls(fingerprint, chunks, bm25, stopwords)

    def search(self, question: str, k: int, doc_id: str | None = None) -> list[tuple[StoredChunk, float]]:
        """The `k` best chunks by BM25 score (only those sharing a word with the question)."""
        query = terms(question, self.stopwords)
        if self.bm25 is None or not query:
            return []
        scores = np.asarray(self.bm25.get_scores(query))  # type: ignore[attr-defined]
        if doc_id is not None:
            scores = np.where([stored.doc_id == doc_id for stored in self.chunks], scores, 0.0)
        best = np.argsort(-scores, kind="stable")[:k]
        return [(self.chunks[i], float(scores[i])) for i in best if scores[i] > 0.0]


class LexicalIndexes:
    """The BM25 index of each collection, rebuilt when the collection has changed since it was built."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._indexes: dict[str, LexicalIndex] = {}
        self._lock = threading.Lock()

    def get(self, collection: str) -> LexicalIndex:
        """Raises CollectionNotFoundError (via the store) for an unknown collection."""
        fingerprint = tuple(sorted((d.doc_id, d.chunks) for d in self.store.documents(collection)))
        with self._lock:
            index = self._indexes.get(collection)
            if index is None or index.fingerprint != fingerprint:
                index = LexicalIndex.build(fingerprint, self.store.chunks(collection))
                self._indexes[collection] = index
            return index
