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


def test_bm25_scores_follow_the_okapi_formula() -> None:
    import math

    from rag.lexical import K1, B, LexicalIndex

    texts = ["ferry leaves nine ferry", "bridge repaired stone", "ferry bridge", "harbour crane gasket"]
    index = LexicalIndex.build((), [chunk(text) for text in texts])
    docs = [terms(text) for text in texts]
    avgdl = sum(map(len, docs)) / len(docs)

    def okapi(query: list[str], doc: list[str]) -> float:
        total = 0.0
        for word in query:
            df = sum(word in other for other in docs)
            idf = math.log(1 + (len(docs) - df + 0.5) / (df + 0.5))
            tf = doc.count(word)
            total += idf * tf * (K1 + 1) / (tf + K1 * (1 - B + B * len(doc) / avgdl))
        return total

    found = {stored.doc_id: score for stored, score in index.search("ferry bridge", 4)}
    expected = {text: okapi(["ferry", "bridge"], doc) for text, doc in zip(texts, docs, strict=True)}
    assert found.keys() == {text for text, score in expected.items() if score > 0}
    for text, score in found.items():
        assert math.isclose(score, expected[text], rel_tol=1e-5)
    assert index.search("unrelated words", 4) == []
