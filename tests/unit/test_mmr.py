"""MMR against hand-computed picks: a near-duplicate of the best hit loses to a different passage."""

from rag.chunking import Chunk
from rag.retrieve import maximal_marginal_relevance
from rag.store import StoredChunk


def candidate(name: str, score: float, vector: list[float]) -> tuple[StoredChunk, float, list[float]]:
    return StoredChunk(name, name, 0, Chunk(0, name, 0, 1, None, 1)), score, vector


CANDIDATES = [
    candidate("a", 0.90, [1.0, 0.0]),
    candidate("a-copy", 0.89, [1.0, 0.0]),
    candidate("c", 0.50, [0.0, 1.0]),
]


def names(picks: list[tuple[StoredChunk, float]]) -> list[str]:
    return [chunk.doc_id for chunk, _ in picks]


def test_balanced_mmr_skips_the_duplicate() -> None:
    # second pick: a-copy gains 0.5*0.89 - 0.5*1.0 = -0.055, c gains 0.5*0.50 - 0.5*0.0 = 0.25
    assert names(maximal_marginal_relevance(CANDIDATES, 2, mmr_lambda=0.5)) == ["a", "c"]


def test_pure_relevance_is_plain_top_k() -> None:
    assert names(maximal_marginal_relevance(CANDIDATES, 3, mmr_lambda=1.0)) == ["a", "a-copy", "c"]


def test_scores_stay_the_similarities_and_k_is_capped() -> None:
    picks = maximal_marginal_relevance(CANDIDATES, 10, mmr_lambda=0.5)
    assert [score for _, score in picks] == [0.90, 0.50, 0.89]
    assert maximal_marginal_relevance([], 3, 0.5) == []
