"""The retention view's mapping from kept positions to document spans, with the bundled model's tokenizer:
token ranges are found by encoding prompt prefixes (not through the offsets the view uses)."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from compression import retention
from rag.chunking import Chunk, join_chunks, joined
from rag.context import LcDocument, lc_messages, render_prompt
from rag.retrieve import Citation
from server.retention import retention_report

FIRST = "The harbour opened in 1851. Ships came from the north every spring."
SECOND = "Orchards grew pears on the hill. The co-operative sold them in town."


def documents() -> list[LcDocument]:
    half = len(SECOND) // 2
    return [
        LcDocument("a", "harbour.txt", FIRST, ((0, 0, len(FIRST)),)),
        LcDocument("b", "orchards.txt", SECOND, ((0, 0, half), (1, half, len(SECOND)))),
    ]


def citation(number: int, doc_id: str, chunk_index: int) -> Citation:
    return Citation(number, doc_id, f"{doc_id}.txt", chunk_index, 0, 1, None, 0.5, "")


def token_range(tokenizer: Any, rendered: str, text: str) -> tuple[int, int]:
    """The tokens of `text` in the rendered prompt: the prefix before it and through it, encoded."""
    start = rendered.index(text)
    before = len(tokenizer.encode(rendered[:start], add_special_tokens=False))
    through = len(tokenizer.encode(rendered[: start + len(text)], add_special_tokens=False))
    return before, through


def second_document_kept(tokenizer: Any, citations: list[Citation]) -> tuple[dict[str, Any], int]:
    """The view of an LC prompt whose engine kept the second document's tokens everywhere and nothing
    else, and how many tokens that is."""
    messages = lc_messages("When did the harbour open?", documents())
    rendered = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    fractions = [0.0] * len(tokenizer.encode(rendered, add_special_tokens=False))
    first, last = token_range(tokenizer, rendered, SECOND)
    fractions[first:last] = [1.0] * (last - first)
    return retention_report(
        tokenizer, render_prompt(tokenizer, messages), documents(), fractions, citations
    ), last - first


def test_kept_positions_land_on_their_document_and_an_evicted_passage_is_warned_about(tokenizer: Any) -> None:
    report, kept = second_document_kept(tokenizer, [citation(1, "a", 0), citation(2, "b", 1)])
    harbour, orchards = report["documents"]
    assert (harbour["title"], harbour["kept"]) == ("harbour.txt", 0.0)
    assert orchards["kept"] == 1.0 and [chunk["kept"] for chunk in orchards["chunks"]] == [1.0, 1.0]
    assert orchards["spans"] == [[0, len(SECOND), 1.0]]
    assert report["kept"] == pytest.approx(kept / report["tokens"], abs=1e-4)
    assert [row["evicted"] for row in report["retrieved"]] == [True, False]
    assert len(report["warnings"]) == 1 and "[1]" in report["warnings"][0]


def test_a_half_kept_document_has_spans_at_both_levels(tokenizer: Any) -> None:
    messages = lc_messages("Who sold pears?", documents())
    rendered = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    length = len(tokenizer.encode(rendered, add_special_tokens=False))
    first, _ = token_range(tokenizer, rendered, SECOND)
    kept_to, _ = token_range(tokenizer, rendered, SECOND[SECOND.index(" The co-operative") :])
    fractions = [0.25] * length
    fractions[first:kept_to] = [1.0] * (kept_to - first)
    (_, orchards) = retention_report(tokenizer, render_prompt(tokenizer, messages), documents(), fractions)[
        "documents"
    ]
    cut = SECOND.index(" The co-operative")  # a word's token starts with the space before it
    assert orchards["spans"] == [[0, cut, 1.0], [cut, len(SECOND), 0.25]]
    first_chunk, second_chunk = orchards["chunks"]
    half = len(SECOND) // 2  # the first chunk ends two characters past the cut
    assert first_chunk["kept"] == pytest.approx((cut + 0.25 * (half - cut)) / half, abs=1e-4)
    assert second_chunk["kept"] == 0.25


def test_encoded_retention_is_the_kept_fraction_in_255_steps() -> None:
    kept = [torch.tensor([[0, 1], [0, 2]]), torch.tensor([[0, 3], [1, 3]])]  # 2 layers x 2 heads
    counts = retention.kept_counts(kept, 5)
    assert counts.tolist() == [3, 2, 1, 2, 0]
    decoded = retention.decode(retention.encode(counts, 4))
    assert decoded == pytest.approx([0.75, 0.5, 0.25, 0.5, 0.0], abs=0.002)


def test_joined_chunks_say_where_each_chunk_lies_in_the_rebuilt_text() -> None:
    chunks = [
        Chunk(0, "hello world", 0, 11, None, 2),
        Chunk(1, "world again", 6, 17, None, 2),
        Chunk(2, "next part", 18, 27, None, 2),
    ]
    text, spans = joined(chunks)
    assert text == join_chunks(chunks) == "hello world again\nnext part"
    assert [text[start:end] for _, start, end in spans] == [chunk.text for chunk in chunks]


def test_the_ui_view_shades_every_character_once_and_shows_the_warning(tokenizer: Any) -> None:
    import html
    import re

    from ui.views import citations_html

    view, _ = second_document_kept(tokenizer, [citation(1, "a", 0)])
    shown = citations_html({"citations": [], "kv": {"retention": view}}, "c")
    texts = re.findall(r"<div class='retention-text'[^>]*>(.*?)</div>", shown)
    assert [html.unescape(re.sub(r"<[^>]+>", "", text)) for text in texts] == [FIRST, SECOND]
    assert shown.count("class=evicted") >= 2  # the evicted passage's row and the first document's text
    assert "retention-warning" in shown and "Passage [1]" in shown
