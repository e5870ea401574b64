"""BM25 over a collection's chunks, for lexical and hybrid retrieval.

Embedded Chroma 1.5.9 has no sparse index ("Sparse vector indexing is not enabled in local"). `bm25s`
was tried and dropped: it imports numba, whose llvmlite objects break vLLM's kernel-override scan of
`sys.modules` in any process that later starts an engine. So the index is lcrag's own: Okapi BM25 (Lucene's
idf, k1 = 1.5, b = 0.75) as a sparse chunk x term matrix of precomputed term scores, built in memory from
the chunks Chroma holds. It stays in step with Chroma by a fingerprint of the collection's complete
documents (their ids and chunk counts): any write or delete, by this process or another one sharing a
`chroma run` server, changes it, and the next search rebuilds the index from Chroma. Only complete
documents are indexed, as in dense retrieval.
"""

from __future__ import annotations

import re
import threading
from collections import Counter
from dataclasses import dataclass

import numpy as np
from scipy import sparse

from rag.store import Store, StoredChunk

WORD = re.compile(r"\w\w+")  # words of two or more letters or digits
K1, B = 1.5, 0.75
_STOPWORD_TEXT = (
    "a about above after again against all am an and any are as at be because been before being below "
    "between both but by can could did do does doing down during each few for from further had has have "
    "having he her here hers herself him himself his how i if in into is it its itself just me more most "
    "my myself no nor not now of off on once only or other our ours ourselves out over own same she "
    "should so some such than that the their theirs them themselves then there these they this those "
    "through to too under until up very was we were what when where which while who whom why will with "
    "would you your yours yourself yourselves"
)
STOPWORDS = frozenset(_STOPWORD_TEXT.split())  # common English function words


def terms(text: str, stopwords: frozenset[str] = STOPWORDS) -> list[str]:
    """Lower-cased words of `text`, stop words dropped (a word repeated in a query counts each time)."""
    return [word for word in WORD.findall(text.lower()) if word not in stopwords]


@dataclass
class LexicalIndex:
    """One collection's chunks and their BM25 index."""

    fingerprint: tuple[tuple[str, int], ...]
    chunks: list[StoredChunk]
    vocabulary: dict[str, int]
    weights: sparse.csc_matrix  # chunks x terms: each term's BM25 score in each chunk

    @classmethod
    def build(cls, fingerprint: tuple[tuple[str, int], ...], chunks: list[StoredChunk]) -> LexicalIndex:
        vocabulary: dict[str, int] = {}
        rows, columns, counts = [], [], []
        for row, stored in enumerate(chunks):
            for word, count in Counter(terms(stored.chunk.text)).items():
                rows.append(row)
                columns.append(vocabulary.setdefault(word, len(vocabulary)))
                counts.append(count)
        shape = (len(chunks), len(vocabulary))
        tf = sparse.csr_matrix((np.asarray(counts, dtype=np.float32), (rows, columns)), shape=shape)
        lengths = np.asarray(tf.sum(axis=1)).ravel()
        norm = K1 * (1.0 - B + B * lengths / max(float(lengths.mean()) if len(chunks) else 0.0, 1e-9))
        df = np.bincount(np.asarray(columns, dtype=np.int64), minlength=len(vocabulary))
        idf = np.log(1.0 + (len(chunks) - df + 0.5) / (df + 0.5)).astype(np.float32)
        tf = tf.tocoo()
        scored = tf.data * (K1 + 1.0) / (tf.data + norm[tf.row]) * idf[tf.col]
        weights = sparse.csc_matrix((scored, (tf.row, tf.col)), shape=shape)
        return cls(fingerprint, chunks, vocabulary, weights)

    def search(self, question: str, k: int, doc_id: str | None = None) -> list[tuple[StoredChunk, float]]:
        """The `k` best chunks by BM25 score (only those sharing a word with the question)."""
        columns = [self.vocabulary[word] for word in terms(question) if word in self.vocabulary]
        if not columns:
            return []
        scores = np.asarray(self.weights[:, columns].sum(axis=1)).ravel()
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
