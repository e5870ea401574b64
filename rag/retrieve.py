"""Retrieval: the question's embedding against a collection, top-k by cosine similarity, optionally
diversified with maximal marginal relevance (MMR), each hit carrying its citation."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rag.embeddings import Embedder
from rag.store import Store, StoredChunk

MMR_CANDIDATES_PER_RESULT = 4


@dataclass(frozen=True)
class Citation:
    """Where a retrieved chunk comes from, and how close it was to the question."""

    number: int  # [n] in the prompt and the answer
    doc_id: str
    title: str
    chunk_index: int
    start: int
    end: int
    page: int | None
    score: float
    text: str


def retrieve(
    store: Store,
    embedder: Embedder,
    collection: str,
    question: str,
    k: int,
    doc_id: str | None = None,
    mmr_lambda: float | None = None,
) -> list[Citation]:
    """Top-`k` chunks for `question`; with `mmr_lambda` (0..1, 1 = pure relevance) diversified by MMR."""
    query = embedder.embed([question])[0]
    if mmr_lambda is None:
        hits = [(chunk, score) for chunk, score, _ in store.query(collection, query, k, doc_id)]
    else:
        candidates = store.query(
            collection, query, k * MMR_CANDIDATES_PER_RESULT, doc_id, with_embeddings=True
        )
        hits = maximal_marginal_relevance(candidates, k, mmr_lambda)
    return [_citation(number, chunk, score) for number, (chunk, score) in enumerate(hits, start=1)]


def maximal_marginal_relevance(
    candidates: list[tuple[StoredChunk, float, list[float] | None]], k: int, mmr_lambda: float
) -> list[tuple[StoredChunk, float]]:
    """Greedy MMR (Carbonell & Goldstein, 1998): each pick maximises
    lambda * similarity(question) - (1 - lambda) * max similarity(already picked)."""
    if not candidates:
        return []
    vectors = np.array([vector for _, _, vector in candidates], dtype=np.float32)
    relevance = np.array([score for _, score, _ in candidates], dtype=np.float32)
    picked: list[int] = []
    while len(picked) < min(k, len(candidates)):
        redundancy = (vectors @ vectors[picked].T).max(axis=1) if picked else np.zeros(len(candidates))
        gain = mmr_lambda * relevance - (1.0 - mmr_lambda) * redundancy
        gain[picked] = -np.inf
        picked.append(int(gain.argmax()))
    return [(candidates[i][0], candidates[i][1]) for i in picked]


def _citation(number: int, stored: StoredChunk, score: float) -> Citation:
    chunk = stored.chunk
    return Citation(
        number,
        stored.doc_id,
        stored.doc_title,
        chunk.index,
        chunk.start,
        chunk.end,
        chunk.page,
        score,
        chunk.text,
    )
