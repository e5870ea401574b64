"""Reciprocal rank fusion and BM25's terms, against hand-computed values."""

from rag.chunking import Chunk
from rag.lexical import terms
from rag.retrieve import RRF_K, reciprocal_rank_fusion
from rag.store import StoredChunk


def chunk(name: str) -> StoredChunk:
    return StoredChunk(name, name, 0, Chunk(0, name, 0, 1, None, 1))


def test_fusion_sums_reciprocal_ranks() -> None:
    a, b, c, d = (chunk(name) for name in "abcd")
    fused = reciprocal_rank_fusion([[a, b, c], [c, d, b]])
    scores = {"a": 1 / (RRF_K + 1), "b": 1 / (RRF_K + 2) + 1 / (RRF_K + 3),
              "c": 1 / (RRF_K + 3) + 1 / (RRF_K + 1), "d": 1 / (RRF_K + 2)}  # fmt: skip
    assert [s.doc_id for s in fused] == sorted(scores, key=lambda name: -scores[name])
    assert [s.doc_id for s in fused] == ["c", "b", "a", "d"]


def test_a_chunk_in_one_ranking_only_still_counts() -> None:
    a, b = chunk("a"), chunk("b")
    assert [s.doc_id for s in reciprocal_rank_fusion([[a], []])] == ["a"]
    assert [s.doc_id for s in reciprocal_rank_fusion([[], [b, a]])] == ["b", "a"]


def test_terms_are_lower_cased_words_without_stop_words() -> None:
    assert terms("The Ferry leaves at 9 and at QX-7731.", frozenset({"the", "at", "and"})) == [
        "ferry", "leaves", "qx", "7731"]  # fmt: skip
