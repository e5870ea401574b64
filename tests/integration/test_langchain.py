"""LangChain over lcrag: `LcragRetriever` against the tiny-model server (every kind, the filters, errors,
async) inside a real chain with `ChatOpenAI(base_url=lcrag)`, and `langchain_chroma.Chroma` reading a
collection lcrag wrote."""

import asyncio
from collections.abc import Iterator
from pathlib import Path

import chromadb
import httpx
import pytest
from chromadb.config import Settings as ChromaSettings
from langchain_chroma import Chroma
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnableParallel, RunnablePassthrough
from langchain_openai import ChatOpenAI

from bench.corpus import TOWNS, town_files
from lcrag.langchain import LcragEmbeddings, LcragRetriever
from rag.ingest import Ingestor
from rag.loaders import load_bytes
from rag.retrieve import retrieve
from rag.store import Store
from tests.conftest import RunningServer

pytestmark = pytest.mark.integration

PART = "The spare part catalogue lists gasket QX-7731 for the harbour crane's left hydraulic arm."
COLLECTION = "langchain-towns"


@pytest.fixture(scope="module")
def towns(tiny_server: RunningServer) -> Iterator[dict[str, str]]:
    """Four towns and a parts list on the tiny server; yields doc_id by file name."""
    texts = dict(town_files(TOWNS[:4]))
    files = [
        ("files", (name, text.encode(), "text/plain")) for name, text in {**texts, "parts.txt": PART}.items()
    ]
    with httpx.Client(base_url=tiny_server.base_url, headers=tiny_server.headers(), timeout=120) as client:
        assert client.post("/v1/collections", json={"name": COLLECTION}).status_code == 201
        report = client.post(f"/v1/collections/{COLLECTION}/documents", files=files).json()
        yield {file["name"]: file["doc_id"] for file in report["files"]}
        client.delete(f"/v1/collections/{COLLECTION}")


def retriever(server: RunningServer, **options) -> LcragRetriever:
    return LcragRetriever(base_url=server.base_url, api_key=server.api_key, collection=COLLECTION, **options)


def server_query(server: RunningServer, body: dict) -> list[dict]:
    url = f"{server.base_url}/v1/collections/{COLLECTION}/query"
    return httpx.post(url, json=body, headers=server.headers(), timeout=120).json()["data"]


@pytest.mark.parametrize("retrieval", ["dense", "bm25", "hybrid"])
def test_the_retriever_returns_what_the_query_api_returns(
    tiny_server: RunningServer, towns: dict[str, str], retrieval: str
) -> None:
    question = "Which town makes pear cider?"
    documents = retriever(tiny_server, retrieval=retrieval, top_k=3).invoke(question)
    hits = server_query(tiny_server, {"query": question, "top_k": 3, "retrieval": retrieval})
    assert [d.page_content for d in documents] == [hit.pop("text") for hit in hits]
    assert [d.metadata for d in documents] == hits
    assert "pear cider" in documents[0].page_content
    assert documents[0].id == f"{towns['corvale.txt']}:0"


def test_the_retriever_takes_lcrags_filters(tiny_server: RunningServer, towns: dict[str, str]) -> None:
    assert retriever(tiny_server, retrieval="bm25", top_k=2).invoke("gasket QX-7731")[0].page_content == PART
    only_brisk = retriever(tiny_server, doc_id=towns["brisk.txt"]).invoke("Which town makes pear cider?")
    assert {d.metadata["doc_id"] for d in only_brisk} == {towns["brisk.txt"]}
    floor = retriever(tiny_server, min_score=0.99).invoke("Which town makes pear cider?")
    assert floor == []
    in_order = retriever(tiny_server, top_k=5, order="document").invoke("festival lanterns")
    orders = [list(towns.values()).index(d.metadata["doc_id"]) for d in in_order]
    assert orders == sorted(orders)


def test_the_async_retriever_matches_the_sync_one(tiny_server: RunningServer, towns: dict[str, str]) -> None:
    sync = retriever(tiny_server, retrieval="hybrid").invoke("a bridge of seven arches")
    asynchronous = asyncio.run(retriever(tiny_server, retrieval="hybrid").ainvoke("a bridge of seven arches"))
    assert asynchronous == sync


def test_the_servers_refusals_reach_the_caller(tiny_server: RunningServer, towns: dict[str, str]) -> None:
    from lcrag.client import ApiFailure

    with pytest.raises(ApiFailure, match="does not exist") as missing:
        LcragRetriever(
            base_url=tiny_server.base_url, api_key=tiny_server.api_key, collection="nope-nope"
        ).invoke("anything")
    assert missing.value.status == 404
    with pytest.raises(ApiFailure) as unauthorised:
        LcragRetriever(base_url=tiny_server.base_url, api_key="wrong", collection=COLLECTION).invoke("x")
    assert unauthorised.value.status == 401
    with pytest.raises(ApiFailure, match="did not answer"):
        LcragRetriever(base_url="http://127.0.0.1:9", collection=COLLECTION).invoke("x")


def test_a_langchain_chain_answers_with_lcrags_retriever_and_chatopenai(
    tiny_server: RunningServer, towns: dict[str, str], tokenizer
) -> None:
    llm = ChatOpenAI(base_url=f"{tiny_server.base_url}/v1", api_key=tiny_server.api_key,
                     model=tiny_server.model, max_tokens=8, temperature=0, max_retries=0)  # fmt: skip
    prompt = ChatPromptTemplate.from_messages(
        [("system", "Answer from the context.\n\n{context}"), ("human", "{question}")]
    )
    with_context = {
        "context": lambda x: "\n\n".join(d.page_content for d in x["documents"]),
        "question": lambda x: x["question"],
    }
    chain = RunnableParallel(
        documents=retriever(tiny_server, retrieval="bm25", top_k=1), question=RunnablePassthrough()
    ).assign(message=with_context | prompt | llm)
    question = "What does the catalogue list for the crane? QX-7731"
    out = chain.invoke(question)
    assert [d.page_content for d in out["documents"]] == [PART]
    assert isinstance(StrOutputParser().invoke(out["message"]), str)
    # the retrieved chunk reached the served model: the prompt is the chunk's tokens longer than without it
    with_chunk = out["message"].response_metadata["token_usage"]["prompt_tokens"]
    without = (prompt | llm).invoke({"context": "", "question": question})
    chunk_tokens = len(tokenizer(PART, add_special_tokens=False).input_ids)
    assert abs(with_chunk - without.response_metadata["token_usage"]["prompt_tokens"] - chunk_tokens) <= 2


def test_langchain_chroma_reads_a_collection_lcrag_wrote(tmp_path: Path, embedder, tokenizer) -> None:
    path = tmp_path / "chroma"
    store = Store.open(path=str(path))
    store.create_collection("towns")
    ingestor = Ingestor(store, embedder, tokenizer, chunk_tokens=64, overlap_tokens=8)
    for name, text in town_files():
        ingestor.add("towns", load_bytes(name, text.encode()))
    question = "Which town has an observatory on the hill?"
    ours = retrieve(store, embedder, "towns", question, 3)
    store.close()

    # in-process, Chroma wants the settings lcrag opened the folder with; another process can pass its own
    client = chromadb.PersistentClient(path=str(path), settings=ChromaSettings(anonymized_telemetry=False))
    chroma = Chroma(
        collection_name="towns", client=client, embedding_function=LcragEmbeddings(embedder=embedder)
    )
    theirs = chroma.similarity_search_with_score(question, k=3)
    assert [document.page_content for document, _ in theirs] == [hit.text for hit in ours]
    for (document, distance), hit in zip(theirs, ours, strict=True):
        meta = document.metadata
        assert (meta["doc_id"], meta["doc_title"], meta["chunk_index"]) == (
            hit.doc_id,
            hit.title,
            hit.chunk_index,
        )
        assert (meta["start"], meta["end"]) == (hit.start, hit.end)
        assert 1.0 - distance == pytest.approx(hit.score, abs=1e-5)  # cosine space: distance = 1 - similarity
