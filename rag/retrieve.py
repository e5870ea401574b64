"""Retrieval: a collection's best chunks for a question, each hit carrying its citation.

Three kinds (`retrieval`):
- `dense`: the question's embedding against the chunks' (cosine similarity), optionally diversified with
  maximal marginal relevance (MMR);
- `bm25`: lexical BM25 over the same chunks (`rag.lexical`);
- `hybrid`: both rankings fused by reciprocal rank fusion (Cormack et al., 2009: each list adds
  1 / (60 + rank)), so a chunk either ranking puts high comes out high.
Every hit's `score` is its cosine similarity to the question, whichever ranking found it, so `min_score`
(drop hits below it) means the same for every kind. `order="document"` returns the kept chunks in the
collection's order instead of by rank (order-preserving RAG, Yu et al., 2024). With `rerank`, the kind's
first `RERANK_CANDIDATES_PER_RESULT` x k candidates are re-scored by a cross-encoder (`rag.rerank`) and its
best k kept; the hits then carry its `rerank_score` too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from rag.embeddings import Embedder
from rag.lexical import LexicalIndexes
from rag.rerank import RERANK_CANDIDATES_PER_RESULT, Reranker
from rag.store import Store, StoredChunk

MMR_CANDIDATES_PER_RESULT = 4
FUSION_CANDIDATES_PER_RESULT = 4  # each ranking contributes this many candidates per result kept
RRF_K = 60
Retrieval = Literal["dense", "bm25", "hybrid"]
Order = Literal["score", "document"]
RETRIEVALS: tuple[Retrieval, ...] = ("dense", "bm25", "hybrid")


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
    score: float  # cosine similarity of the chunk to the question
    text: str
    rerank_score: float | None = None  # the cross-encoder's relevance, when the hits were reranked


@dataclass(frozen=True)
class RetrievalOptions:
    """How to retrieve: the kind, the order of the kept chunks, and the relevance floor."""

    retrieval: Retrieval = "dense"
    order: Order = "score"
    min_score: float | None = None
    mmr_lambda: float | None = None  # dense only: 0..1, 1 = pure relevance
    rerank: bool = False  # re-score the candidates with the server's cross-encoder


def retrieve(
    store: Store,
    embedder: Embedder,
    collection: str,
    question: str,
    k: int,
    doc_id: str | None = None,
    options: RetrievalOptions | None = None,
    lexical: LexicalIndexes | None = None,
    reranker: Reranker | None = None,
) -> list[Citation]:
    """The top-`k` chunks for `question` as `options` ask (dense by default; `options.mmr_lambda` diversifies
    dense retrieval); bm25 and hybrid need `lexical`, the collections' BM25 indexes, and `options.rerank`
    needs `reranker`."""
    options = options or RetrievalOptions()
    if options.rerank and reranker is None:
        raise ValueError("reranking needs a cross-encoder: start the server with --reranker PATH")
    wanted = k * RERANK_CANDIDATES_PER_RESULT if options.rerank else k
    ranked = _ranked(store, embedder, collection, question, wanted, doc_id, options, lexical)
    if reranker is not None and options.rerank:
        relevance = reranker.scores(question, [chunk.chunk.text for chunk, _ in ranked])
        best = sorted(range(len(ranked)), key=lambda i: -relevance[i])[:k]
        hits: list[tuple[StoredChunk, float, float | None]] = [(*ranked[i], relevance[i]) for i in best]
    else:
        hits = [(chunk, score, None) for chunk, score in ranked]
    if options.min_score is not None:
        hits = [hit for hit in hits if hit[1] >= options.min_score]
    if options.order == "document":
        hits.sort(key=lambda hit: (hit[0].doc_order, hit[0].doc_id, hit[0].chunk.index))
    return [_citation(number, *hit) for number, hit in enumerate(hits, start=1)]


def _ranked(
    store: Store,
    embedder: Embedder,
    collection: str,
    question: str,
    k: int,
    doc_id: str | None,
    options: RetrievalOptions,
    lexical: LexicalIndexes | None,
) -> list[tuple[StoredChunk, float]]:
    """The kind's top `k` chunks, best first, each with its cosine similarity to the question."""
    query = embedder.embed([question])[0]
    if options.retrieval == "dense":
        return _dense(store, collection, query, k, doc_id, options.mmr_lambda)
    if lexical is None:
        raise ValueError(f"{options.retrieval} retrieval needs the collections' BM25 indexes")
    candidates = k * FUSION_CANDIDATES_PER_RESULT
    lexical_ranking = [chunk for chunk, _ in lexical.get(collection).search(question, candidates, doc_id)]
    if options.retrieval == "bm25":
        ranked = lexical_ranking[:k]
    else:
        dense_ranking = [chunk for chunk, _, _ in store.query(collection, query, candidates, doc_id)]
        ranked = reciprocal_rank_fusion([dense_ranking, lexical_ranking])[:k]
    return list(zip(ranked, _similarities(store, collection, query, ranked), strict=True))


def reciprocal_rank_fusion(rankings: Sequence[Sequence[StoredChunk]]) -> list[StoredChunk]:
    """The chunks of all `rankings`, best first by the sum of 1 / (RRF_K + rank) over the rankings that
    hold them (rank counted from 1); ties keep the first ranking's order."""
    fused: dict[tuple[str, int], float] = {}
    chunks: dict[tuple[str, int], StoredChunk] = {}
    for ranking in rankings:
        for rank, chunk in enumerate(ranking, start=1):
            key = (chunk.doc_id, chunk.chunk.index)
            fused[key] = fused.get(key, 0.0) + 1.0 / (RRF_K + rank)
            chunks.setdefault(key, chunk)
    return [chunks[key] for key in sorted(fused, key=lambda key: -fused[key])]


def _dense(
    store: Store, collection: str, query: list[float], k: int, doc_id: str | None, mmr_lambda: float | None
) -> list[tuple[StoredChunk, float]]:
    if mmr_lambda is None:
        return [(chunk, score) for chunk, score, _ in store.query(collection, query, k, doc_id)]
    candidates = store.query(collection, query, k * MMR_CANDIDATES_PER_RESULT, doc_id, with_embeddings=True)
    return maximal_marginal_relevance(candidates, k, mmr_lambda)


def _similarities(
    store: Store, collection: str, query: list[float], chunks: list[StoredChunk]
) -> list[float]:
    """Cosine similarity of each chunk to the question (stored embeddings are unit vectors)."""
    if not chunks:
        return []
    vectors = np.asarray(store.embeddings(collection, chunks), dtype=np.float32)
    return [float(value) for value in vectors @ np.asarray(query, dtype=np.float32)]


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


def _citation(number: int, stored: StoredChunk, score: float, rerank_score: float | None) -> Citation:
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
        rerank_score,
    )
