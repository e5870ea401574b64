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
    chunks: list[Chunk] = []
    for index, (text, tokens) in enumerate(zip(texts, token_counts(tokenizer, texts), strict=True)):
        start = chunk_start(document.text, text, chunks[-1] if chunks else None, overlap_tokens, tokenizer)
        if start < 0:
            raise ValueError(f"Chunk {index} of {document.name} is not a span of its text.")
        chunks.append(Chunk(index, text, start, start + len(text), document.page_at(start), tokens))
    return chunks


def token_counts(tokenizer: PreTrainedTokenizerBase, texts: list[str]) -> list[int]:
    return [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]] if texts else []


OVERLAP_SLACK_TOKENS = 4  # a piece's tokens counted alone vs inside its chunk


def chunk_start(
    text: str, chunk: str, previous: Chunk | None, overlap_tokens: int, tokenizer: PreTrainedTokenizerBase
) -> int:
    """Where `chunk` lies in `text` (-1 if nowhere), given the chunk before it. Chunks come in order, each
    starting after the previous one and at most `overlap_tokens` before its end. Searching from that earliest
    start finds the right occurrence even in periodic text (repeated sentences, log lines, table rows),
    where the chunk's text also occurs a few sentences after the previous chunk's start; LangChain's own
    start_index guess, and a search from the previous start alone, take those and lose most of the text."""
    if previous is None:
        return text.find(chunk)
    earliest = previous.start + overlap_start(previous.text, overlap_tokens + OVERLAP_SLACK_TOKENS, tokenizer)
    start = text.find(chunk, max(previous.start + 1, earliest))
    if start >= 0 and (start <= previous.end or not text[previous.end : start].strip()):
        return start  # overlapping the previous chunk, or after it with only whitespace between
    return text.find(chunk, previous.start + 1)  # a longer overlap than the splitter's budget


def overlap_start(chunk: str, tokens: int, tokenizer: PreTrainedTokenizerBase) -> int:
    """The character offset in `chunk` where its last `tokens` tokens begin (0 if it has fewer)."""
    if tokenizer.is_fast:
        offsets = tokenizer(chunk, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
        return offsets[-tokens][0] if len(offsets) > tokens else 0
    ids = tokenizer.encode(chunk, add_special_tokens=False)  # a slow tokenizer: estimate from the mean
    return max(0, len(chunk) - len(chunk) * tokens // max(len(ids), 1))


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
