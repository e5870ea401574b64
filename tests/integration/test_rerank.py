"""The cross-encoder reranker (`--reranker PATH`) with a tiny random cross-encoder: it keeps the candidates
the cross-encoder itself (read through plain transformers) ranks best, in that order, for every retrieval
kind; a server started with it reranks by default and per request only when asked; a server without one
refuses `rerank` with a 400 that names the flag."""

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import torch

from bench.corpus import TOWNS, town_paragraph
from rag.ingest import Ingestor
from rag.lexical import LexicalIndexes
from rag.loaders import load_bytes
from rag.rerank import RERANK_CANDIDATES_PER_RESULT, Reranker
from rag.retrieve import RetrievalOptions, retrieve
from rag.store import Store
from tests.conftest import RunningServer, start_server, stop_server
from tests.rerankers import save_tiny_cross_encoder

pytestmark = pytest.mark.integration

QUESTION = "Which town holds its festival at midsummer night?"


@pytest.fixture(scope="module")
def cross_encoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_cross_encoder(tmp_path_factory.mktemp("cross-encoder"))


def reference_scores(model_dir: Path, question: str, passages: list[str]) -> list[float]:
    """The cross-encoder's logits, read with transformers alone (no sentence-transformers, no lcrag)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    batch = tokenizer(
        [question] * len(passages), passages, return_tensors="pt", padding=True, truncation=True
    )
    with torch.no_grad():
        return model(**batch).logits.squeeze(-1).tolist()


@pytest.fixture(scope="module")
def towns(
    tmp_path_factory: pytest.TempPathFactory, embedder, tokenizer
) -> Iterator[tuple[Store, LexicalIndexes]]:
    store = Store.open(path=str(tmp_path_factory.mktemp("rerank") / "chroma"))
    store.create_collection("towns")
    ingestor = Ingestor(store, embedder, tokenizer, chunk_tokens=48, overlap_tokens=0)
    for name, *rest in TOWNS:
        ingestor.add("towns", load_bytes(f"{name.lower()}.txt", town_paragraph(name, *rest).encode()))
    yield store, LexicalIndexes(store)
    store.close()


@pytest.mark.parametrize("kind", ["dense", "bm25", "hybrid"])
def test_reranking_keeps_the_cross_encoders_best_candidates_in_its_order(
    towns, embedder, cross_encoder: Path, kind: str
) -> None:
    store, lexical = towns
    k = 3
    candidates = retrieve(
        store,
        embedder,
        "towns",
        QUESTION,
        k * RERANK_CANDIDATES_PER_RESULT,
        options=RetrievalOptions(kind),
        lexical=lexical,
    )
    logits = reference_scores(cross_encoder, QUESTION, [hit.text for hit in candidates])
    expected = [candidates[i] for i in sorted(range(len(candidates)), key=lambda i: -logits[i])[:k]]
    reranked = retrieve(
        store,
        embedder,
        "towns",
        QUESTION,
        k,
        options=RetrievalOptions(kind, rerank=True),
        lexical=lexical,
        reranker=Reranker(cross_encoder),
    )
    assert [(hit.doc_id, hit.chunk_index) for hit in reranked] == [
        (hit.doc_id, hit.chunk_index) for hit in expected
    ]
    plain = retrieve(store, embedder, "towns", QUESTION, k, options=RetrievalOptions(kind), lexical=lexical)
    assert [hit.text for hit in reranked] != [hit.text for hit in plain]  # the random model reorders
    for hit, original in zip(reranked, expected, strict=True):
        assert hit.score == pytest.approx(original.score, abs=1e-5)  # `score` stays the cosine similarity
        assert hit.rerank_score == pytest.approx(
            torch.sigmoid(torch.tensor(logits[candidates.index(original)])).item(), abs=1e-4
        )
    assert all(hit.rerank_score is None for hit in plain)


def test_floor_and_document_order_apply_after_reranking(towns, embedder, cross_encoder: Path) -> None:
    store, _ = towns
    reranker = Reranker(cross_encoder)
    ranked = retrieve(
        store, embedder, "towns", QUESTION, 4, options=RetrievalOptions(rerank=True), reranker=reranker
    )
    in_order = retrieve(
        store,
        embedder,
        "towns",
        QUESTION,
        4,
        options=RetrievalOptions(rerank=True, order="document"),
        reranker=reranker,
    )
    assert sorted(hit.text for hit in in_order) == sorted(hit.text for hit in ranked)
    assert [hit.text for hit in in_order] != [hit.text for hit in ranked]
    floor = sorted(hit.score for hit in ranked)[1]
    floored = retrieve(
        store,
        embedder,
        "towns",
        QUESTION,
        4,
        options=RetrievalOptions(rerank=True, min_score=floor),
        reranker=reranker,
    )
    assert [hit.text for hit in floored] == [hit.text for hit in ranked if hit.score >= floor]
    with pytest.raises(ValueError, match="--reranker"):
        retrieve(store, embedder, "towns", QUESTION, 2, options=RetrievalOptions(rerank=True))


@pytest.fixture(scope="module")
def rerank_server(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path, cross_encoder: Path):
    data_dir = tmp_path_factory.mktemp("rerank-server")
    args = [
        "--model",
        str(tiny_model_dir),
        "--max-model-len",
        "1024",
        "--kv-cache-gb",
        "1",
        "--data-dir",
        str(data_dir),
        "--reranker",
        str(cross_encoder),
    ]
    process, server = start_server(data_dir, args, model=tiny_model_dir.name)
    files = [
        ("files", (f"{name.lower()}.txt", town_paragraph(name, *rest).encode(), "text/plain"))
        for name, *rest in TOWNS
    ]
    with httpx.Client(base_url=server.base_url, timeout=120) as client:
        assert client.post("/v1/collections", json={"name": "towns"}).status_code == 201
        assert client.post("/v1/collections/towns/documents", files=files).status_code == 200
    yield server
    stop_server(process)


def test_a_server_with_a_reranker_reranks_unless_told_not_to(rerank_server: RunningServer) -> None:
    def query(**options) -> list[dict]:
        body = {"query": QUESTION, "top_k": 3, **options}
        reply = httpx.post(f"{rerank_server.base_url}/v1/collections/towns/query", json=body, timeout=60)
        assert reply.status_code == 200, reply.text
        return reply.json()["data"]

    by_default, plain = query(), query(rerank=False)
    assert all(hit["rerank_score"] is not None for hit in by_default)
    assert [hit["rerank_score"] for hit in by_default] == sorted(
        (h["rerank_score"] for h in by_default), reverse=True
    )
    assert all(hit["rerank_score"] is None for hit in plain)
    assert [hit["text"] for hit in by_default] != [hit["text"] for hit in plain]

    body = {
        "model": rerank_server.model,
        "max_tokens": 2,
        "messages": [{"role": "user", "content": QUESTION}],
        "lcrag": {"collection": "towns", "mode": "rag", "top_k": 3},
    }
    chat = httpx.post(f"{rerank_server.base_url}/v1/chat/completions", json=body, timeout=60).json()
    assert [c["text"] for c in chat["lcrag"]["citations"]] == [hit["text"] for hit in by_default]


def test_a_server_without_a_reranker_refuses_rerank(tiny_server: RunningServer) -> None:
    url = f"{tiny_server.base_url}/v1/collections/nothing-here/query"
    reply = httpx.post(url, json={"query": "x", "rerank": True}, headers=tiny_server.headers(), timeout=30)
    assert reply.status_code == 400
    assert "--reranker" in reply.json()["error"]["message"]
    body = {
        "model": tiny_server.model,
        "messages": [{"role": "user", "content": "x"}],
        "lcrag": {"collection": "nothing-here", "mode": "rag", "rerank": True},
    }
    chat = httpx.post(
        f"{tiny_server.base_url}/v1/chat/completions", json=body, headers=tiny_server.headers(), timeout=30
    )
    assert chat.status_code == 400 and "--reranker" in chat.json()["error"]["message"]
