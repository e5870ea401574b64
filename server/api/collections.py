"""Collections: create, list (with the LC pre-flight check), delete; upload, list and delete documents;
retrieval-only queries. Handlers are plain functions, so FastAPI runs Chroma and embedding work in its
thread pool, off the event loop."""

from __future__ import annotations

from typing import Annotated

from anyio import from_thread
from fastapi import APIRouter, File, Request, UploadFile, status

from rag.chunking import join_chunks
from rag.context import estimate_lc_prompt_tokens
from rag.errors import RagError
from rag.loaders import LoadedDocument, load_bytes
from rag.retrieve import retrieve
from server.errors import BadRequestError, PayloadTooLargeError, from_rag_error
from server.schemas import (
    ChunkOut,
    CollectionCreate,
    CollectionList,
    CollectionOut,
    Deleted,
    DocumentDetail,
    DocumentList,
    DocumentOut,
    IngestedFile,
    IngestReport,
    QueryRequest,
    QueryResponse,
)
from server.services import Services

router = APIRouter(prefix="/v1/collections", tags=["collections"])


def services(request: Request) -> Services:
    return request.app.state.lcrag


def drop_context_caches(svc: Services, name: str) -> None:
    """The collection's documents changed: its compressed context caches no longer match any prompt (their
    key holds the context's exact tokens), so give their memory back now."""
    if svc.context_caches is not None:
        from_thread.run(svc.context_caches.drop, name)


def describe(svc: Services, name: str) -> CollectionOut:
    documents = svc.store.documents(name)
    tokens = sum(d.tokens for d in documents)
    lc_tokens = estimate_lc_prompt_tokens([d.tokens for d in documents])
    available = svc.lc_available_tokens()
    return CollectionOut(
        name=name,
        documents=len(documents),
        chunks=sum(d.chunks for d in documents),
        tokens=tokens,
        lc_prompt_tokens=lc_tokens,
        lc_available_tokens=available,
        fits_lc=lc_tokens <= available,
    )


@router.post("", status_code=status.HTTP_201_CREATED, response_model=CollectionOut)
def create_collection(body: CollectionCreate, request: Request) -> CollectionOut:
    svc = services(request)
    try:
        svc.store.create_collection(body.name)
        return describe(svc, body.name)
    except RagError as error:
        raise from_rag_error(error, param="name") from None


@router.get("", response_model=CollectionList)
def list_collections(request: Request) -> CollectionList:
    svc = services(request)
    return CollectionList(data=[describe(svc, name) for name in svc.store.list_collections()])


@router.get("/{name}", response_model=CollectionOut)
def get_collection(name: str, request: Request) -> CollectionOut:
    try:
        return describe(services(request), name)
    except RagError as error:
        raise from_rag_error(error) from None


@router.delete("/{name}", response_model=Deleted)
def delete_collection(name: str, request: Request) -> Deleted:
    svc = services(request)
    try:
        svc.store.delete_collection(name)
    except RagError as error:
        raise from_rag_error(error) from None
    drop_context_caches(svc, name)
    return Deleted(id=name)


@router.post("/{name}/documents", response_model=IngestReport)
def upload_documents(
    name: str, request: Request, files: Annotated[list[UploadFile], File(description="Documents to add.")]
) -> IngestReport:
    """Add files; every file is read and checked before any is stored, so a bad file stores nothing."""
    svc = services(request)
    limit = svc.settings.max_upload_mb * 1_000_000
    try:
        svc.store.require_collection(name)  # 404 before reading any upload
        loaded = [_load_upload(upload, limit) for upload in files]
        _refuse_duplicate_names(loaded)
        results = svc.ingestor.add_all(name, loaded)
    except RagError as error:
        raise from_rag_error(error, param="files") from None
    counts = {kind: sum(r.status == kind for r in results) for kind in ("added", "replaced", "skipped")}
    if counts["added"] or counts["replaced"]:
        drop_context_caches(svc, name)
    return IngestReport(
        files=[IngestedFile(name=r.name, doc_id=r.doc_id, status=r.status, chunks=r.chunks) for r in results],
        chunks=sum(r.chunks for r in results if r.status != "skipped"),
        **counts,
    )


@router.get("/{name}/documents", response_model=DocumentList)
def list_documents(name: str, request: Request) -> DocumentList:
    try:
        documents = services(request).store.documents(name)
    except RagError as error:
        raise from_rag_error(error) from None
    return DocumentList(
        data=[
            DocumentOut(
                doc_id=d.doc_id,
                name=d.name,
                title=d.title,
                chunks=d.chunks,
                tokens=d.tokens,
                characters=d.characters,
            )
            for d in documents
        ]
    )


@router.get("/{name}/documents/{doc_id}", response_model=DocumentDetail)
def get_document(name: str, doc_id: str, request: Request) -> DocumentDetail:
    """One document with its text and its chunks (what LC and RAG see of it)."""
    try:
        info, stored = services(request).store.document_chunks(name, doc_id)
    except RagError as error:
        raise from_rag_error(error) from None
    chunks = [s.chunk for s in stored]
    return DocumentDetail(
        doc_id=info.doc_id, name=info.name, title=info.title, chunks=info.chunks, tokens=info.tokens,
        characters=info.characters, text=join_chunks(chunks),
        chunk_list=[ChunkOut(index=c.index, start=c.start, end=c.end, page=c.page, tokens=c.tokens,
                             text=c.text) for c in chunks],
    )  # fmt: skip


@router.delete("/{name}/documents/{doc_id}", response_model=Deleted)
def delete_document(name: str, doc_id: str, request: Request) -> Deleted:
    svc = services(request)
    try:
        svc.store.delete_document(name, doc_id)
    except RagError as error:
        raise from_rag_error(error) from None
    drop_context_caches(svc, name)
    return Deleted(id=doc_id)


@router.post("/{name}/query", response_model=QueryResponse)
def query_collection(name: str, body: QueryRequest, request: Request) -> QueryResponse:
    svc = services(request)
    try:
        dense_for_mmr = "dense" if body.mmr_lambda is not None else None  # MMR diversifies dense hits
        how = svc.retrieval_options(
            body.retrieval or dense_for_mmr, body.order, body.min_score, body.mmr_lambda, body.rerank
        )
        if how.mmr_lambda is not None and how.retrieval != "dense":
            raise BadRequestError("mmr_lambda works with dense retrieval only.", param="mmr_lambda")
        hits = retrieve(svc.store, svc.embedder, name, body.query, body.top_k, body.doc_id,
                        options=how, lexical=svc.lexical, reranker=svc.reranker)  # fmt: skip
    except RagError as error:
        raise from_rag_error(error) from None
    return QueryResponse(data=hits)


def _refuse_duplicate_names(documents: list[LoadedDocument]) -> None:
    """Two files of one name in one upload (e.g. `a/notes.txt` and `b/notes.txt`, stored by their bare
    names) would silently replace each other: refuse the upload instead."""
    seen: set[str] = set()
    for document in documents:
        if document.name in seen:
            raise BadRequestError(
                f"Two files in this upload are named {document.name}; rename one or upload them separately.",
                param="files",
            )
        seen.add(document.name)


def _load_upload(upload: UploadFile, limit: int) -> LoadedDocument:
    data = upload.file.read(limit + 1)
    name = upload.filename or "upload"
    if len(data) > limit:
        raise PayloadTooLargeError(
            f"{name} is larger than the {limit // 1_000_000} MB upload limit (LCRAG_MAX_UPLOAD_MB).",
            param="files",
        )
    return load_bytes(name, data)
