"""LangChain over lcrag: a retriever on a collection, through the server's HTTP API, and the embeddings
that open lcrag's Chroma collections directly.

    from langchain_openai import ChatOpenAI
    from lcrag.langchain import LcragRetriever

    retriever = LcragRetriever(base_url="http://127.0.0.1:8000", collection="docs", retrieval="hybrid")
    llm = ChatOpenAI(base_url="http://127.0.0.1:8000/v1", api_key="-", model="smollm2-135m-instruct")

`LcragRetriever` sends `POST /v1/collections/{collection}/query` with the same kinds and filters as a chat
request's `lcrag` options (`retrieval`, `order`, `min_score`, `mmr_lambda`, `doc_id`, `rerank`), so a
chain's RAG sees what lcrag's own `rag` mode sees. Each `Document` carries the citation as metadata:
`doc_id`, `title`, `chunk_index`, `start` / `end` (character offsets in the document), `page`, `score`
(cosine similarity), `rerank_score` and `number` (rank, from 1). Needs the `langchain` extra
(`pip install 'lcrag[langchain]'`).

`LcragEmbeddings` is the embedder lcrag's collections were written with (LangChain's `Embeddings`), for
`langchain_chroma.Chroma(collection_name=..., persist_directory=<data dir>/chroma, embedding_function=...)`
on a stopped server's store, or `client=chromadb.HttpClient(...)` on a shared `chroma run` one. The
record layout is in docs/api.md ("Collections in Chroma").
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from langchain_core.callbacks import AsyncCallbackManagerForRetrieverRun, CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.retrievers import BaseRetriever
from pydantic import Field

from lcrag.client import TIMEOUT_S, call, call_async, connect, connect_async

if TYPE_CHECKING:
    from rag.embeddings import Embedder


class LcragRetriever(BaseRetriever):
    """The top `top_k` chunks of an lcrag collection for a query, as LangChain `Document`s."""

    base_url: str = Field(description="The lcrag server, e.g. http://127.0.0.1:8000 (no /v1).")
    collection: str
    api_key: str | None = None
    top_k: int = Field(default=5, ge=1, le=100)
    retrieval: Literal["dense", "bm25", "hybrid"] | None = Field(
        default=None, description="Retrieval kind; None: the server's default (LCRAG_RETRIEVAL)."
    )
    order: Literal["score", "document"] | None = None
    min_score: float | None = Field(default=None, description="Drop chunks below this cosine similarity.")
    mmr_lambda: float | None = Field(default=None, description="Dense only: MMR diversity, 1 = relevance.")
    doc_id: str | None = Field(default=None, description="Only search this document.")
    rerank: bool | None = Field(
        default=None, description="Cross-encoder reranking; None: if the server has one."
    )
    timeout: float = TIMEOUT_S

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun
    ) -> list[Document]:
        with connect(self.base_url, self.api_key, self.timeout) as http:
            return self._documents(call(http, "POST", self._path, json=self._body(query)))

    async def _aget_relevant_documents(
        self, query: str, *, run_manager: AsyncCallbackManagerForRetrieverRun
    ) -> list[Document]:
        async with connect_async(self.base_url, self.api_key, self.timeout) as http:
            return self._documents(await call_async(http, "POST", self._path, json=self._body(query)))

    @property
    def _path(self) -> str:
        return f"/v1/collections/{self.collection}/query"

    def _body(self, query: str) -> dict[str, Any]:
        body = {
            "query": query,
            "top_k": self.top_k,
            "retrieval": self.retrieval,
            "order": self.order,
            "min_score": self.min_score,
            "mmr_lambda": self.mmr_lambda,
            "doc_id": self.doc_id,
            "rerank": self.rerank,
        }
        return {key: value for key, value in body.items() if value is not None}

    @staticmethod
    def _documents(reply: dict[str, Any]) -> list[Document]:
        return [
            Document(page_content=hit.pop("text"), metadata=hit, id=f"{hit['doc_id']}:{hit['chunk_index']}")
            for hit in reply["data"]
        ]


class LcragEmbeddings(Embeddings):
    """lcrag's embedder (the server's default unless `model_path` names another sentence-transformers
    folder, or `embedder` is one already loaded) as LangChain `Embeddings`: unit vectors, as lcrag stores
    them."""

    def __init__(self, model_path: str | None = None, embedder: Embedder | None = None) -> None:
        from rag.embeddings import Embedder

        self.embedder = embedder or Embedder(model_path)

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return self.embedder.embed(texts)

    def embed_query(self, text: str) -> list[float]:
        return self.embedder.embed([text])[0]
