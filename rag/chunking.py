"""Split a document into chunks sized in *model tokens* with LangChain's RecursiveCharacterTextSplitter.

Chunks keep their character offsets into the document text (and the PDF page they start on), so a
citation can point at the exact passage and the whole text can be rebuilt in order for LC mode.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING
from weakref import WeakKeyDictionary, ref

from rag.loaders import LoadedDocument

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

DEFAULT_CHUNK_TOKENS = 256
DEFAULT_OVERLAP_TOKENS = 32


@dataclass(frozen=True)
class Chunk:
    index: int
    text: str
    start: int  # character offsets into the document text
    end: int
    page: int | None
    tokens: int


def chunk_document(
    document: LoadedDocument,
    tokenizer: PreTrainedTokenizerBase,
    chunk_tokens: int = DEFAULT_CHUNK_TOKENS,
    overlap_tokens: int = DEFAULT_OVERLAP_TOKENS,
) -> list[Chunk]:
    """Chunks of at most about `chunk_tokens` tokens (by `tokenizer`), neighbours sharing `overlap_tokens`."""
    from langchain_text_splitters import RecursiveCharacterTextSplitter

    if not 0 <= overlap_tokens < chunk_tokens:
        raise ValueError(
            f"overlap_tokens ({overlap_tokens}) must be >= 0 and below chunk_tokens ({chunk_tokens})."
        )
    splitter = RecursiveCharacterTextSplitter(
        length_function=piece_length(tokenizer), chunk_size=chunk_tokens, chunk_overlap=overlap_tokens
    )
    texts = splitter.split_text(document.text)
    if not texts:
        return []
    encoded = tokenizer(texts, add_special_tokens=False, return_offsets_mapping=tokenizer.is_fast)
    offsets = encoded["offset_mapping"] if tokenizer.is_fast else [None] * len(texts)
    chunks: list[Chunk] = []
    previous_tail = 0
    for index, (text, ids, spans) in enumerate(zip(texts, encoded["input_ids"], offsets, strict=True)):
        start = chunk_start(document.text, text, chunks[-1] if chunks else None, previous_tail)
        if start < 0:
            raise ValueError(f"Chunk {index} of {document.name} is not a span of its text.")
        chunks.append(Chunk(index, text, start, start + len(text), document.page_at(start), len(ids)))
        previous_tail = tail_start(text, len(ids), spans, overlap_tokens + OVERLAP_SLACK_TOKENS)
    return chunks


OVERLAP_SLACK_TOKENS = 4  # a piece's tokens counted alone vs inside its chunk


def chunk_start(text: str, chunk: str, previous: Chunk | None, previous_tail: int) -> int:
    """Where `chunk` lies in `text` (-1 if nowhere), given the chunk before it and where that chunk's last
    overlap-budget tokens begin in it (`previous_tail`, characters). Chunks come in order, each starting
    after the previous one and no earlier than that tail. Searching from there finds the right occurrence
    even in periodic text (repeated sentences, log lines, table rows), where the chunk's text also occurs a
    few sentences after the previous chunk's start; LangChain's own start_index guess, and a search from the
    previous start alone, take those and lose most of the text."""
    if previous is None:
        return text.find(chunk)
    start = text.find(chunk, previous.start + max(1, previous_tail))
    if start >= 0 and (start <= previous.end or not text[previous.end : start].strip()):
        return start  # overlapping the previous chunk, or after it with only whitespace between
    return text.find(chunk, previous.start + 1)  # a longer overlap than the splitter's budget


def tail_start(chunk: str, token_count: int, offsets: list[tuple[int, int]] | None, tokens: int) -> int:
    """The character offset in `chunk` where its last `tokens` tokens begin (0 if it has fewer), from the
    tokenizer's offsets, or estimated from the mean characters per token for a slow tokenizer."""
    if token_count <= tokens:
        return 0
    if offsets is not None:
        return offsets[-tokens][0]
    return len(chunk) - len(chunk) * tokens // token_count


_piece_lengths: WeakKeyDictionary[PreTrainedTokenizerBase, Callable[[str], int]] = WeakKeyDictionary()


def piece_length(tokenizer: PreTrainedTokenizerBase) -> Callable[[str], int]:
    """The splitter's length function: tokens in a piece, as LangChain's `from_huggingface_tokenizer` counts
    them, memoised per tokenizer. The splitter measures every candidate piece (down to single words when a
    paragraph is too long), and words repeat, so most lookups skip the tokenizer (~5x faster chunking)."""
    if tokenizer not in _piece_lengths:
        owner = ref(tokenizer)  # the cache must not keep its tokenizer alive

        @lru_cache(maxsize=200_000)
        def tokens_in(text: str) -> int:
            counter = owner()
            assert counter is not None, "the tokenizer of this length function was freed"
            return len(counter.tokenize(text))

        _piece_lengths[tokenizer] = tokens_in
    return _piece_lengths[tokenizer]


def join_chunks(chunks: list[Chunk]) -> str:
    """The document text rebuilt from its chunks in order, overlaps counted once."""
    return joined(chunks)[0]


def joined(chunks: list[Chunk]) -> tuple[str, list[tuple[Chunk, int, int]]]:
    """`join_chunks`'s text, and where each chunk lies in it: (chunk, start, end) in position order."""
    parts: list[str] = []
    spans: list[tuple[Chunk, int, int]] = []
    covered = length = 0
    for chunk in sorted(chunks, key=lambda c: c.start):
        if chunk.end <= covered:
            spans.append((chunk, length - (covered - chunk.start), length - (covered - chunk.end)))
            continue
        if chunk.start > covered and parts:
            parts.append("\n")  # the separator the splitter dropped between chunks
            length += 1
        overlap = max(0, covered - chunk.start)
        spans.append((chunk, length - overlap, length - overlap + len(chunk.text)))
        parts.append(chunk.text[overlap:])
        length += len(chunk.text) - overlap
        covered = chunk.end
    return "".join(parts), spans
