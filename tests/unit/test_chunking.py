"""Chunking in model tokens: sizes, overlaps, offsets, pages, and the text rebuilt from chunks."""

import re
from itertools import pairwise

import pytest

from bench.corpus import towns_text
from rag.chunking import Chunk, chunk_document, chunk_start, join_chunks
from rag.loaders import load_bytes
from tests.documents import make_pdf


def squash(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


@pytest.fixture(scope="module")
def document():
    return load_bytes("towns.txt", (towns_text() + "\n\n").encode() * 3)


def test_chunks_stay_within_the_token_budget_and_point_at_their_text(document, tokenizer) -> None:
    chunks = chunk_document(document, tokenizer, chunk_tokens=64, overlap_tokens=8)
    assert len(chunks) > 10
    assert [c.index for c in chunks] == list(range(len(chunks)))
    for chunk in chunks:
        assert chunk.tokens == len(tokenizer.encode(chunk.text, add_special_tokens=False)) <= 64
        assert document.text[chunk.start : chunk.end] == chunk.text


def test_neighbouring_chunks_overlap_and_the_text_is_rebuilt_once(document, tokenizer) -> None:
    chunks = chunk_document(document, tokenizer, chunk_tokens=64, overlap_tokens=16)
    assert any(later.start < earlier.end for earlier, later in pairwise(chunks))
    assert squash(join_chunks(chunks)) == squash(document.text)
    assert squash(join_chunks(list(reversed(chunks)))) == squash(document.text)


NOISE = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again. "
FORM_LETTER = "A paragraph that a form letter repeats, word for word, on every page. " * 6
PERIODIC = {
    "sentences": NOISE * 300,
    "log lines": "".join(f"INFO worker: heartbeat ok, queue {i % 3}\n" for i in range(900)),
    "paragraphs": "\n\n".join([FORM_LETTER] * 30),
}


@pytest.mark.parametrize("kind", PERIODIC)
@pytest.mark.parametrize(("chunk_tokens", "overlap_tokens"), [(256, 32), (64, 0)])
def test_periodic_text_is_rebuilt_whole(tokenizer, kind: str, chunk_tokens: int, overlap_tokens: int) -> None:
    """Text whose chunks also occur a sentence or a line later (RULER's noise haystack, logs, form letters):
    each chunk is placed where it was cut, so LC mode gets the whole document, not its first chunks."""
    document = load_bytes(f"{kind}.txt", PERIODIC[kind].encode())
    chunks = chunk_document(document, tokenizer, chunk_tokens, overlap_tokens)
    assert len(chunks) > 8
    assert squash(join_chunks(chunks)) == squash(document.text)
    assert chunks[-1].end == len(document.text.rstrip())
    for earlier, later in pairwise(chunks):
        assert document.text[later.start : later.end] == later.text
        overlap = document.text[later.start : earlier.end] if later.start < earlier.end else ""
        assert len(tokenizer.encode(overlap, add_special_tokens=False)) <= overlap_tokens + 2


def test_a_chunk_is_never_placed_past_a_gap_of_text() -> None:
    """A chunk overlapping its predecessor by more than the overlap budget (here: from character 150 of a
    chunk whose budgeted tail starts at 180) is found where it was cut, not in a later copy of the passage
    (which would leave the text between them out of LC mode)."""
    passage = towns_text()[:400]
    text = passage + "\n\n" + passage
    previous = Chunk(0, passage[:200], 0, 200, None, 0)
    assert chunk_start(text, passage[150:350], previous, previous_tail=180) == 150
    assert chunk_start(text, passage[190:390], previous, previous_tail=180) == 190
    assert chunk_start(text, passage[:100], None, previous_tail=0) == 0


def test_pdf_chunks_know_their_page(tokenizer) -> None:
    pages = [
        [f"Page {p} line {i} talks about river {p} and its many bridges." for i in range(12)]
        for p in (1, 2, 3)
    ]
    doc = load_bytes("atlas.pdf", make_pdf(pages))
    chunks = chunk_document(doc, tokenizer, chunk_tokens=48, overlap_tokens=0)
    for chunk in chunks:
        assert chunk.page == int(re.match(r"Page (\d)", chunk.text).group(1))  # type: ignore[union-attr]
    assert {c.page for c in chunks} == {1, 2, 3}


def test_overlap_must_be_smaller_than_the_chunk(document, tokenizer) -> None:
    with pytest.raises(ValueError, match="overlap_tokens"):
        chunk_document(document, tokenizer, chunk_tokens=32, overlap_tokens=32)


@pytest.mark.parametrize(("chunk_tokens", "overlap_tokens"), [(256, 32), (48, 0)])
def test_memoised_lengths_split_exactly_like_langchains_tokenizer_splitter(
    document, tokenizer, chunk_tokens: int, overlap_tokens: int
) -> None:
    """The cached length function is a speed-up only: the same chunks as LangChain's own
    `from_huggingface_tokenizer` splitter, also on a second document that reuses the warm cache."""
    from langchain_text_splitters import RecursiveCharacterTextSplitter

    other = load_bytes("notes.md", ("# Notes\n\n" + towns_text()[::-1] + "\n\n" + "word " * 400).encode())
    for doc in (document, other, document):
        reference = RecursiveCharacterTextSplitter.from_huggingface_tokenizer(
            tokenizer, chunk_size=chunk_tokens, chunk_overlap=overlap_tokens
        ).split_text(doc.text)
        assert [c.text for c in chunk_document(doc, tokenizer, chunk_tokens, overlap_tokens)] == reference
