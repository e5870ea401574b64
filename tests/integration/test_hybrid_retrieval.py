"""Dense, BM25 and hybrid retrieval over real Chroma with the real MiniLM embedder: each kind's ranking,
document order, the relevance floor, and a BM25 index that follows the collection's writes and deletes."""

from pathlib import Path

import pytest

from bench.corpus import TOWNS, town_paragraph
from rag.ingest import Ingestor
from rag.lexical import LexicalIndexes
from rag.loaders import load_bytes
from rag.retrieve import RetrievalOptions, retrieve
from rag.store import Store

pytestmark = pytest.mark.integration

PART = "The spare part catalogue lists gasket QX-7731 for the harbour crane's left hydraulic arm."


@pytest.fixture
def towns(tmp_path: Path, embedder, tokenizer) -> tuple[Store, Ingestor, LexicalIndexes]:
    store = Store.open(path=str(tmp_path / "chroma"))
    store.create_collection("towns")
    ingestor = Ingestor(store, embedder, tokenizer, chunk_tokens=64, overlap_tokens=8)
    for i, town in enumerate(TOWNS):
        ingestor.add("towns", load_bytes(f"{i}-{town[0].lower()}.txt", town_paragraph(*town).encode()))
    ingestor.add("towns", load_bytes("parts.txt", PART.encode()))
    return store, ingestor, LexicalIndexes(store)


def ask(towns, question: str, k: int, **options) -> list[str]:
    store, ingestor, lexical = towns
    hits = retrieve(store, ingestor.embedder, "towns", question, k, options=RetrievalOptions(**options),
                    lexical=lexical)  # fmt: skip
    return [hit.text for hit in hits]


def test_bm25_ranks_the_chunk_holding_a_rare_code_first(towns) -> None:
    assert ask(towns, "QX-7731", 3, retrieval="bm25")[0] == PART
    assert ask(towns, "zzzz unknown", 3, retrieval="bm25") == []  # no shared word: no lexical hit


def test_hybrid_keeps_what_either_ranking_puts_first(towns) -> None:
    code_first = ask(towns, "QX-7731", 2, retrieval="hybrid")
    assert PART in code_first
    meaning = ask(towns, "Which town brews a drink from pears?", 2, retrieval="hybrid")
    assert any("pear cider" in text for text in meaning)


def test_every_kind_scores_hits_by_cosine_similarity(towns) -> None:
    store, ingestor, lexical = towns
    for kind in ("dense", "bm25", "hybrid"):
        hits = retrieve(store, ingestor.embedder, "towns", "gasket QX-7731 crane", 3,
                        options=RetrievalOptions(kind), lexical=lexical)  # fmt: skip
        part = next(hit for hit in hits if hit.text == PART)
        assert 0.2 < part.score <= 1.0, kind
    dense = retrieve(store, ingestor.embedder, "towns", "gasket QX-7731 crane", 1)
    assert dense[0].text == PART and part.score == pytest.approx(dense[0].score, abs=1e-5)


def test_document_order_keeps_the_same_chunks_in_collection_order(towns) -> None:
    by_score = ask(towns, "festival lanterns music", 4, retrieval="hybrid")
    by_document = ask(towns, "festival lanterns music", 4, retrieval="hybrid", order="document")
    assert sorted(by_score) == sorted(by_document)
    positions = [
        next(i for i, town in enumerate(TOWNS) if f"town of {town[0]} " in text) for text in by_document
    ]
    assert positions == sorted(positions)


def test_the_relevance_floor_drops_weak_hits(towns) -> None:
    assert ask(towns, "QX-7731 gasket", 3, retrieval="hybrid", min_score=0.99) == []
    kept = ask(towns, "QX-7731 gasket", 3, retrieval="hybrid", min_score=0.3)
    assert kept and kept[0] == PART


def test_the_bm25_index_follows_writes_and_deletes(towns) -> None:
    store, ingestor, _ = towns
    assert ask(towns, "ZK-9920", 1, retrieval="bm25") == []
    added = ingestor.add("towns", load_bytes("new.txt", b"Valve ZK-9920 closes the dock's north sluice."))
    assert "ZK-9920" in ask(towns, "ZK-9920", 1, retrieval="bm25")[0]
    store.delete_document("towns", added.doc_id)
    assert ask(towns, "ZK-9920", 1, retrieval="bm25") == []
