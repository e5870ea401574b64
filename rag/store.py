"""Collections in Chroma: an embedded `PersistentClient` under the data dir, or `HttpClient` against a
`chroma run` server (several lcrag servers can share one).

Each chunk is one Chroma record with id `<doc_id>:<chunk_index>`, where `doc_id` is a prefix of the file's
sha256: storing the same file twice writes the same ids, so re-ingesting adds nothing. A document's
chunk 0 carries its listing and is written *last*, so a document is listed (and used by LC mode) only once
all its chunks are stored; an interrupted ingest leaves no listed half-document and resumes by writing the
same ids again. Replacing a changed file stores the new chunks before the old ones are deleted.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from rag.chunking import Chunk
from rag.errors import (
    CollectionExistsError,
    CollectionNotFoundError,
    DocumentNotFoundError,
    InvalidCollectionNameError,
)
from rag.loaders import LoadedDocument

if TYPE_CHECKING:
    from chromadb.api import ClientAPI
    from chromadb.api.models.Collection import Collection

COLLECTION_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{1,61}[a-z0-9]$")
DOC_ID_LENGTH = 16


@dataclass(frozen=True)
class DocumentInfo:
    doc_id: str
    name: str
    title: str
    order: int  # upload time in ns: LC mode lays documents out in this order
    chunks: int
    tokens: int  # of the whole text, by the tokenizer that chunked it (the served model's)


@dataclass(frozen=True)
class StoredChunk:
    doc_id: str
    doc_title: str
    doc_order: int
    chunk: Chunk


@dataclass(frozen=True)
class IngestResult:
    doc_id: str
    name: str
    status: Literal["added", "skipped", "replaced"]
    chunks: int


def check_collection_name(name: str) -> str:
    if not COLLECTION_NAME.fullmatch(name):
        raise InvalidCollectionNameError(
            f"Invalid collection name {name!r}: use 3-63 characters from a-z, 0-9, '_' and '-', "
            "starting and ending with a letter or digit."
        )
    return name


def doc_id_of(document: LoadedDocument) -> str:
    return document.sha256[:DOC_ID_LENGTH]


class Store:
    """Create, list and delete collections; add, list and delete documents; query chunks."""

    def __init__(self, client: ClientAPI) -> None:
        self.client = client

    @classmethod
    def open(cls, path: str | None = None, url: str | None = None) -> Store:
        """Embedded Chroma at `path`, or the Chroma server at `url` (http://host:port)."""
        import chromadb
        from chromadb.config import Settings as ChromaSettings

        settings = ChromaSettings(anonymized_telemetry=False)
        if url:
            from urllib.parse import urlparse

            parsed = urlparse(url)
            client = chromadb.HttpClient(
                host=parsed.hostname or "127.0.0.1",
                port=parsed.port or 8000,
                ssl=parsed.scheme == "https",
                settings=settings,
            )
        elif path:
            client = chromadb.PersistentClient(path=path, settings=settings)
        else:
            raise ValueError("Store.open needs a path or a url.")
        return cls(client)

    # collections

    def create_collection(self, name: str) -> None:
        check_collection_name(name)
        if name in self.list_collections():
            raise CollectionExistsError(f"Collection {name!r} already exists.")
        self.client.create_collection(
            name, configuration={"hnsw": {"space": "cosine"}}, embedding_function=None
        )

    def list_collections(self) -> list[str]:
        return sorted(collection.name for collection in self.client.list_collections())

    def delete_collection(self, name: str) -> None:
        self.require_collection(name)
        self.client.delete_collection(name)

    def require_collection(self, name: str) -> None:
        """Raise CollectionNotFoundError (or InvalidCollectionNameError) unless `name` exists."""
        self._collection(name)

    def _collection(self, name: str) -> Collection:
        check_collection_name(name)
        from chromadb.errors import NotFoundError

        try:
            return self.client.get_collection(name, embedding_function=None)
        except (NotFoundError, ValueError):
            raise CollectionNotFoundError(
                f"Collection {name!r} does not exist: create it with POST /v1/collections or `lcrag ingest`."
            ) from None

    # documents

    def documents(self, name: str) -> list[DocumentInfo]:
        """Complete documents in upload order."""
        heads = self._collection(name).get(where={"chunk_index": 0}, include=["metadatas"])
        infos = [_document_info(meta) for meta in heads["metadatas"] or []]
        return sorted(infos, key=lambda info: (info.order, info.doc_id))

    def add_document(
        self,
        name: str,
        document: LoadedDocument,
        chunks: Sequence[Chunk],
        embeddings: Sequence[Sequence[float]],
        doc_tokens: int,
    ) -> IngestResult:
        """Store `document`'s chunks; skipped if already complete, replaces an older file of that name."""
        if len(chunks) != len(embeddings) or not chunks:
            raise ValueError("add_document needs one embedding per chunk and at least one chunk.")
        collection = self._collection(name)
        doc_id = doc_id_of(document)
        if collection.get(ids=[f"{doc_id}:0"], include=[])["ids"]:
            return IngestResult(doc_id, document.name, "skipped", len(chunks))
        same_name = collection.get(
            where={"$and": [{"doc_name": document.name}, {"chunk_index": 0}]}, include=["metadatas"]
        )
        previous = [_document_info(meta) for meta in same_name["metadatas"] or []]
        order = previous[0].order if previous else time.time_ns()
        head_meta = {"doc_name": document.name, "doc_title": document.title, "doc_order": order,
                     "doc_chunks": len(chunks), "doc_tokens": doc_tokens}  # fmt: skip
        records = [_record(doc_id, head_meta, chunk) for chunk in chunks]
        head, tail = 0, list(range(1, len(chunks)))
        for batch in _batches(tail, self.client.get_max_batch_size()):
            _upsert(collection, [records[i] for i in batch], [embeddings[i] for i in batch])
        _upsert(collection, [records[head]], [embeddings[head]])  # last: the document is now complete
        for old in previous:
            collection.delete(where={"doc_id": old.doc_id})
        return IngestResult(doc_id, document.name, "replaced" if previous else "added", len(chunks))

    def delete_document(self, name: str, doc_id: str) -> None:
        collection = self._collection(name)
        if not collection.get(where={"doc_id": doc_id}, limit=1, include=[])["ids"]:
            raise DocumentNotFoundError(f"Collection {name!r} has no document {doc_id!r}.")
        collection.delete(where={"doc_id": doc_id})

    def document_chunks(self, name: str, doc_id: str) -> tuple[DocumentInfo, list[StoredChunk]]:
        """A complete document and its chunks in order (an interrupted ingest's leftovers are not one)."""
        found = self._collection(name).get(where={"doc_id": doc_id}, include=["metadatas", "documents"])
        metas, texts = found["metadatas"] or [], found["documents"] or []
        head = next((meta for meta in metas if meta["chunk_index"] == 0), None)
        if head is None:
            raise DocumentNotFoundError(f"Collection {name!r} has no document {doc_id!r}.")
        chunks = sorted(
            (_stored_chunk(meta, text) for meta, text in zip(metas, texts, strict=True)),
            key=lambda s: s.chunk.index,
        )
        return _document_info(head), chunks

    def count_chunks(self, name: str) -> int:
        return self._collection(name).count()

    def chunks(self, name: str) -> list[StoredChunk]:
        """Every chunk of every complete document, in upload order then chunk order."""
        complete = {info.doc_id for info in self.documents(name)}
        found = self._collection(name).get(include=["metadatas", "documents"])
        stored = [
            _stored_chunk(meta, text)
            for meta, text in zip(found["metadatas"] or [], found["documents"] or [], strict=True)
            if meta["doc_id"] in complete
        ]
        return sorted(stored, key=lambda s: (s.doc_order, s.doc_id, s.chunk.index))

    def query(
        self,
        name: str,
        embedding: Sequence[float],
        k: int,
        doc_id: str | None = None,
        with_embeddings: bool = False,
    ) -> list[tuple[StoredChunk, float, list[float] | None]]:
        """The `k` nearest chunks of complete documents as (chunk, cosine similarity, embedding if asked).

        Chunks of a document whose ingest was interrupted (its chunk 0 missing) are skipped: twice `k` are
        fetched and those dropped, so such leftovers never reach a prompt.
        """
        collection = self._collection(name)
        include = ["metadatas", "documents", "distances", *(["embeddings"] if with_embeddings else [])]
        found = collection.query(
            query_embeddings=[list(embedding)],
            n_results=2 * k,
            where={"doc_id": doc_id} if doc_id else None,
            include=include,  # type: ignore[arg-type]
        )
        metas, texts, distances = found["metadatas"][0], found["documents"][0], found["distances"][0]  # type: ignore[index]
        vectors = found["embeddings"][0] if with_embeddings else [None] * len(metas)  # type: ignore[index]
        heads = {f"{meta['doc_id']}:0" for meta in metas}
        complete = {head.split(":")[0] for head in collection.get(ids=sorted(heads), include=[])["ids"]}
        hits = [
            (_stored_chunk(meta, text), 1.0 - distance, None if vector is None else list(vector))
            for meta, text, distance, vector in zip(metas, texts, distances, vectors, strict=True)
            if meta["doc_id"] in complete
        ]
        return hits[:k]


def _record(doc_id: str, doc_meta: dict[str, Any], chunk: Chunk) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "doc_id": doc_id,
        **doc_meta,
        "chunk_index": chunk.index,
        "start": chunk.start,
        "end": chunk.end,
        "tokens": chunk.tokens,
    }
    if chunk.page is not None:
        meta["page"] = chunk.page
    return {"id": f"{doc_id}:{chunk.index}", "text": chunk.text, "meta": meta}


def _upsert(
    collection: Collection, records: list[dict[str, Any]], embeddings: Sequence[Sequence[float]]
) -> None:
    collection.upsert(
        ids=[r["id"] for r in records],
        documents=[r["text"] for r in records],
        metadatas=[r["meta"] for r in records],
        embeddings=[list(e) for e in embeddings],
    )


def _batches(items: list[int], size: int) -> Iterator[list[int]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _stored_chunk(meta: Any, text: str) -> StoredChunk:
    chunk = Chunk(meta["chunk_index"], text, meta["start"], meta["end"], meta.get("page"), meta["tokens"])
    return StoredChunk(meta["doc_id"], meta["doc_title"], meta["doc_order"], chunk)


def _document_info(head: Any) -> DocumentInfo:
    return DocumentInfo(
        doc_id=head["doc_id"],
        name=head["doc_name"],
        title=head["doc_title"],
        order=head["doc_order"],
        chunks=head["doc_chunks"],
        tokens=head["doc_tokens"],
    )
