"""Collections in Chroma: an embedded `PersistentClient` under the data dir, or `HttpClient` against a
`chroma run` server (several lcrag servers can share one).

Each chunk is one Chroma record with id `<doc_id>:<chunk_index>`, where `doc_id` is a prefix of the file's
sha256: storing the same file twice writes the same ids, so re-ingesting adds nothing. A document's
chunk 0 carries its listing and is written *last*, so a document is listed (and used by LC mode) only once
all its chunks are stored; an interrupted ingest leaves no listed half-document and resumes by writing the
same ids again. Replacing a changed file stores the new chunks before the old ones are deleted.

Writes to one collection are serialised within a process (two uploads of one file name cannot both end up
listed); an embedded store is held by one process at a time (`rag.store_lock`). `remove_incomplete` clears
what an interrupted ingest left (chunks whose document never got its chunk 0); servers run it at start.
"""

from __future__ import annotations

import re
import threading
import time
import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

from rag.chunking import Chunk
from rag.errors import (
    CollectionExistsError,
    CollectionNotFoundError,
    DocumentNotFoundError,
    InvalidCollectionNameError,
    StoreUnreadableError,
)
from rag.loaders import LoadedDocument
from rag.store_lock import hold_store_lock, release_store_lock

if TYPE_CHECKING:
    from chromadb.api import ClientAPI
    from chromadb.api.models.Collection import Collection

COLLECTION_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{1,61}[a-z0-9]$")
DOC_ID_LENGTH = 16
SHARED_LEFTOVER_AGE_S = 3600.0
WRITTEN_AT = "written_at"  # unix seconds, on every chunk: how old an incomplete document's leftovers are


@dataclass(frozen=True)
class DocumentInfo:
    doc_id: str
    name: str
    title: str
    order: int  # upload time in ns: LC mode lays documents out in this order
    chunks: int
    tokens: int  # of the whole text, by the tokenizer that chunked it (the served model's)
    characters: int | None = None  # of the whole text (None for documents stored before it was recorded)


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

    def __init__(self, client: ClientAPI, shared: bool = False) -> None:
        self.client = client
        self.shared = shared  # a `chroma run` server other processes may be writing to as well
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()
        self._release = lambda: None

    def close(self) -> None:
        """Let other processes open this embedded store (also done when the Store is garbage-collected)."""
        self._release()

    @contextmanager
    def _writing(self, name: str) -> Iterator[None]:
        """Hold collection `name`'s write lock (one writer per collection in this process)."""
        with self._locks_guard:
            lock = self._locks.setdefault(name, threading.Lock())
        with lock:
            yield

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
            return cls(client, shared=True)
        if not path:
            raise ValueError("Store.open needs a path or a url.")
        folder = hold_store_lock(Path(path))
        try:
            client = chromadb.PersistentClient(path=path, settings=settings)
            client.list_collections()  # reads the store's database now, not on the first request
        except Exception as error:  # sqlite3, Rust bindings and chromadb's own errors: all mean unreadable
            release_store_lock(folder)
            raise StoreUnreadableError(
                f"The collection store in {path} cannot be opened ({type(error).__name__}: {error}). "
                "Move the folder away to start with an empty store, or restore it from a backup."
            ) from None
        store = cls(client)
        store._release = weakref.finalize(store, release_store_lock, folder)
        return store

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
        with self._writing(name):
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
        with self._writing(name):
            return self._write_document(self._collection(name), document, chunks, embeddings, doc_tokens)

    def _write_document(
        self, collection: Collection, document: LoadedDocument, chunks: Sequence[Chunk],
        embeddings: Sequence[Sequence[float]], doc_tokens: int,
    ) -> IngestResult:  # fmt: skip
        doc_id = doc_id_of(document)
        if collection.get(ids=[f"{doc_id}:0"], include=[])["ids"]:
            return IngestResult(doc_id, document.name, "skipped", len(chunks))
        same_name = collection.get(
            where={"$and": [{"doc_name": document.name}, {"chunk_index": 0}]}, include=["metadatas"]
        )
        previous = [_document_info(meta) for meta in same_name["metadatas"] or []]
        order = previous[0].order if previous else time.time_ns()
        head_meta = {
            "doc_name": document.name,
            "doc_title": document.title,
            "doc_order": order,
            "doc_chunks": len(chunks),
            "doc_tokens": doc_tokens,
            "doc_characters": len(document.text),
            WRITTEN_AT: int(time.time()),
        }
        records = [_record(doc_id, head_meta, chunk) for chunk in chunks]
        head, tail = 0, list(range(1, len(chunks)))
        for batch in _batches(tail, self.client.get_max_batch_size()):
            _upsert(collection, [records[i] for i in batch], [embeddings[i] for i in batch])
        _upsert(collection, [records[head]], [embeddings[head]])  # last: the document is now complete
        for old in previous:
            collection.delete(where={"doc_id": old.doc_id})
        return IngestResult(doc_id, document.name, "replaced" if previous else "added", len(chunks))

    def delete_document(self, name: str, doc_id: str) -> None:
        with self._writing(name):
            collection = self._collection(name)
            if not collection.get(where={"doc_id": doc_id}, limit=1, include=[])["ids"]:
                raise DocumentNotFoundError(f"Collection {name!r} has no document {doc_id!r}.")
            collection.delete(where={"doc_id": doc_id})

    def remove_incomplete(self, name: str, older_than_s: float | None = None) -> int:
        """Delete the chunks of documents whose ingest never finished (no chunk 0); returns how many.
        On a shared `chroma run` server only leftovers older than `older_than_s` (default an hour) go,
        since another process may be writing the rest of them right now."""
        if older_than_s is None:
            older_than_s = SHARED_LEFTOVER_AGE_S if self.shared else 0.0
        cutoff = time.time() - older_than_s
        with self._writing(name):
            collection = self._collection(name)
            metas: list[dict[str, Any]] = [
                dict(m) for m in collection.get(include=["metadatas"])["metadatas"] or []
            ]
            complete = {meta["doc_id"] for meta in metas if meta["chunk_index"] == 0}
            stale = {
                meta["doc_id"]
                for meta in metas
                if meta["doc_id"] not in complete and meta.get(WRITTEN_AT, 0) <= cutoff
            }
            removed = sum(meta["doc_id"] in stale for meta in metas)
            for doc_id in sorted(stale):
                collection.delete(where={"doc_id": doc_id})
        return removed

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

    def embeddings(self, name: str, chunks: Sequence[StoredChunk]) -> list[list[float]]:
        """The stored embedding of each chunk, in order."""
        ids = [f"{stored.doc_id}:{stored.chunk.index}" for stored in chunks]
        found = self._collection(name).get(ids=ids, include=["embeddings"])
        by_id = dict(zip(found["ids"], found["embeddings"], strict=True))  # type: ignore[arg-type]
        return [list(by_id[chunk_id]) for chunk_id in ids]

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
        query: list[Sequence[float]] = [list(embedding)]
        found = collection.query(
            query_embeddings=query,
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
        embeddings=[cast(Sequence[float], list(e)) for e in embeddings],
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
        characters=head.get("doc_characters"),
    )
