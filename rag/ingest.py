"""Ingest files into a collection: load -> chunk (model tokens) -> embed (batched) -> store.

A file is checked completely (type, content, text) before anything is written, so a bad file leaves the
collection as it was. Files are stored one by one, so an interrupted folder ingest resumes where it
stopped: finished files are skipped by content hash.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from rag.chunking import DEFAULT_CHUNK_TOKENS, DEFAULT_OVERLAP_TOKENS, chunk_document
from rag.embeddings import Embedder
from rag.errors import RagError
from rag.loaders import READERS, LoadedDocument, load_path
from rag.store import IngestResult, Store

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


@dataclass
class Ingestor:
    """Everything ingestion needs: where to store, how to embed, the served model's tokenizer."""

    store: Store
    embedder: Embedder
    tokenizer: PreTrainedTokenizerBase
    chunk_tokens: int = DEFAULT_CHUNK_TOKENS
    overlap_tokens: int = DEFAULT_OVERLAP_TOKENS

    def add(self, collection: str, document: LoadedDocument) -> IngestResult:
        chunks = chunk_document(document, self.tokenizer, self.chunk_tokens, self.overlap_tokens)
        embeddings = self.embedder.embed([chunk.text for chunk in chunks])
        doc_tokens = len(self.tokenizer.encode(document.text, add_special_tokens=False))
        return self.store.add_document(collection, document, chunks, embeddings, doc_tokens)

    def add_all(
        self,
        collection: str,
        documents: Iterable[LoadedDocument],
        on_result: Callable[[IngestResult], None] = lambda _result: None,
    ) -> list[IngestResult]:
        results = []
        for document in documents:
            result = self.add(collection, document)
            on_result(result)
            results.append(result)
        return results


@dataclass(frozen=True)
class SourceFile:
    """A local file to ingest and the name the collection gives it (its path relative to the folder named,
    or its file name when named itself)."""

    path: Path
    name: str


@dataclass(frozen=True)
class FileOutcome:
    path: Path
    result: IngestResult | None  # None when the file was refused
    error: str | None = None


def ingest_files(ingestor: Ingestor, collection: str, files: Iterable[SourceFile]) -> Iterable[FileOutcome]:
    """Ingest files one by one, yielding each outcome as soon as it is stored (or refused)."""
    for file in files:
        try:
            document = load_path(file.path, file.name)
        except (RagError, OSError) as error:
            yield FileOutcome(file.path, None, str(error))
            continue
        yield FileOutcome(file.path, ingestor.add(collection, document))


def supported_files(paths: Iterable[Path]) -> list[SourceFile]:
    """The files named, and every supported file under the folders named (recursively, sorted), each named
    by its path relative to the folder named."""
    found: list[SourceFile] = []
    for path in paths:
        if path.is_dir():
            inside = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in READERS)
            found += [SourceFile(p, p.relative_to(path).as_posix()) for p in inside]
        else:
            found.append(SourceFile(path, path.name))
    return found
