"""The retention view of a compressed LC answer: which spans of the collection's documents the eviction
kept, and a warning when a passage retrieval ranks high for the question was evicted.

The engine reports, per compressed prompt position, the fraction of (layer, KV head) caches that kept the
token (`compression.retention`). Here those positions are laid over the prompt's text: the chat template is
rendered as vLLM renders it, its tokens' character offsets place every token, and each document's text is
found after its "Document N: title" heading. A request asks for it with `lcrag.kv.retention: true`
(`/v1/compare`: `"retention": true`); it is reported as `lcrag.kv.retention`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rag.context import LcDocument, RenderedPrompt
from rag.retrieve import Citation

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

SPAN_STEPS = 20  # kept fractions of neighbouring characters are merged into spans at 5 % steps
EVICTED_BELOW = 0.5  # a passage is "evicted" when it kept less than half the prompt's average


@dataclass(frozen=True)
class PlacedDocument:
    """A document of the prompt and where its text starts in the rendered prompt."""

    document: LcDocument
    number: int
    text_start: int


def place_documents(rendered: str, documents: Sequence[LcDocument]) -> list[PlacedDocument]:
    """Each document's text in the rendered LC prompt, in order (`rag.context.lc_context`'s layout); those
    not found (a template that rewrites text) are left out."""
    placed, cursor = [], 0
    for number, document in enumerate(documents, start=1):
        heading = f"Document {number}: {document.title}\n"
        at = rendered.find(heading + document.text.rstrip(), cursor)
        if at < 0:
            continue
        cursor = at + len(heading)
        placed.append(PlacedDocument(document, number, cursor))
    return placed


def character_fractions(
    offsets: Sequence[tuple[int, int]], fractions: Sequence[float], start: int, end: int
) -> list[float | None]:
    """The kept fraction of each character in [start, end) of the rendered prompt: its token's (None for
    characters of no compressed token)."""
    chars: list[float | None] = [None] * (end - start)
    for (first, last), fraction in zip(offsets, fractions, strict=False):
        for index in range(max(first, start), min(last, end)):
            chars[index - start] = fraction
    return chars


def mean(values: Sequence[float | None]) -> float | None:
    known = [value for value in values if value is not None]
    return round(sum(known) / len(known), 4) if known else None


def kept_spans(chars: Sequence[float | None]) -> list[list[float]]:
    """[start, end, kept] runs of characters whose kept fraction is the same at `SPAN_STEPS` steps."""
    spans: list[list[float]] = []
    for index, fraction in enumerate(chars):
        if fraction is None:
            continue
        level = round(fraction * SPAN_STEPS) / SPAN_STEPS
        if spans and spans[-1][1] == index and spans[-1][2] == level:
            spans[-1][1] = index + 1
        else:
            spans.append([index, index + 1, level])
    return spans


def document_retention(placed: PlacedDocument, chars: Sequence[float | None]) -> dict[str, Any]:
    document = placed.document
    return {
        "doc_id": document.doc_id,
        "title": document.title,
        "number": placed.number,
        "text": document.text,
        "kept": mean(chars),
        "chunks": [
            {"chunk_index": index, "start": start, "end": end, "kept": mean(chars[start:end])}
            for index, start, end in document.chunks
        ],
        "spans": kept_spans(chars),
    }


def retrieved_retention(
    citations: Sequence[Citation], documents: Sequence[dict[str, Any]], average: float
) -> tuple[list[dict[str, Any]], list[str]]:
    """The kept fraction of each retrieved passage, and a warning for each one that was evicted."""
    chunks = {
        (document["doc_id"], chunk["chunk_index"]): (document, chunk)
        for document in documents
        for chunk in document["chunks"]
    }
    rows, warnings = [], []
    for citation in citations:
        found = chunks.get((citation.doc_id, citation.chunk_index))
        kept = found[1]["kept"] if found else None
        evicted = kept is not None and kept < EVICTED_BELOW * average
        rows.append(
            {
                "number": citation.number,
                "doc_id": citation.doc_id,
                "title": citation.title,
                "chunk_index": citation.chunk_index,
                "score": citation.score,
                "kept": kept,
                "evicted": evicted,
            }
        )
        if evicted:
            warnings.append(
                f"Passage [{citation.number}] of {citation.title!r} (chunk {citation.chunk_index}), which "
                f"retrieval ranks #{citation.number} for this question, kept {kept:.0%} of its K/V against "
                f"{average:.0%} on average: the compressed answer may have lost it."
            )
    return rows, warnings


def retention_report(
    tokenizer: PreTrainedTokenizerBase,
    prompt: RenderedPrompt,
    documents: Sequence[LcDocument],
    fractions: Sequence[float],
    retrieved: Sequence[Citation] = (),
) -> dict[str, Any]:
    """What the eviction kept of each document of an LC prompt (`fractions`: the engine's kept fraction of
    each of the prompt's first positions), and of the passages retrieval would pick."""
    rendered = prompt.text
    encoded = tokenizer(rendered, add_special_tokens=False, return_offsets_mapping=True)
    offsets = [tuple(pair) for pair in encoded["offset_mapping"]][: len(fractions)]
    average = sum(fractions) / len(fractions) if fractions else 0.0
    chars = character_fractions(offsets, fractions, 0, len(rendered))
    shown = [
        document_retention(placed, chars[placed.text_start : placed.text_start + len(placed.document.text)])
        for placed in place_documents(rendered, documents)
    ]
    rows, warnings = retrieved_retention(retrieved, shown, average)
    return {
        "tokens": len(fractions),
        "kept": round(average, 4),
        "evicted_below": round(EVICTED_BELOW * average, 4),  # a passage kept less than this was evicted
        "documents": shown,
        "retrieved": rows,
        "warnings": warnings,
    }
