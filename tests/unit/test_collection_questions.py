"""The held-out split (`finetune.holdout`) and the collection suite's questions
(`evals.collection_questions`): held-out questions never come from the training side, answers are right by
construction, and a known-right and a known-wrong reply score 100 and 0."""

from __future__ import annotations

import re

import pytest

from bench.corpus import TOWNS
from evals.api import Reply
from evals.collection_questions import (
    SourceDocument,
    TooSmallError,
    cloze_items,
    held_out_texts,
    planted,
    quote_items,
    split_of,
)
from evals.lc_vs_rag import score, summary
from finetune.holdout import MIN_UNITS, holdout


def town_sentences(copy: int, name: str, trade: str, festival: str, landmark: str) -> str:
    """Five sentences found nowhere else (each names the copy's own year)."""
    return (
        f"Record {copy} of {name} notes that the census counted {1000 + 37 * copy} households. "
        f"In {1800 + copy}, the merchants of {name} sold {trade} during {festival}. "
        f"The council of {name} repaired {landmark} in the year {1850 + copy}. "
        f"Travellers writing in {1900 + copy} said that {name} smelled of {trade} and smoke. "
        f"By {1950 + copy} the children of {name} learned songs about {landmark}."
    )


def town_documents(copies: int = 2) -> list[SourceDocument]:
    """One document per (town, copy)."""
    return [
        SourceDocument(f"{town[0]}-{copy}", f"{town[0]}-{copy}.txt", town[0], text, (text,))
        for copy in range(copies)
        for town in TOWNS
        if (text := town_sentences(copy, *town))
    ]


def one_long_document(chunks: int = 10) -> list[SourceDocument]:
    """One document of `chunks` chunks (so the split is by chunk)."""
    pieces = [town_sentences(i, *TOWNS[i % len(TOWNS)]) for i in range(chunks)]
    return [SourceDocument("long", "long.pdf", "long", " ".join(pieces), tuple(pieces))]


def test_the_split_holds_out_a_seeded_share_of_documents_and_keeps_old_ones_in_place() -> None:
    documents = {f"doc{i}": [0, 1] for i in range(200)}
    split = holdout(documents, seed=0)
    assert split.unit == "document" and 20 < len(split.held) < 60  # 40 expected
    assert holdout(documents, seed=0) == split and holdout(documents, seed=1) != split
    grown = holdout({**documents, **{f"new{i}": [0] for i in range(5)}}, seed=0)
    assert {doc for doc in grown.held if doc in documents} == split.held


def test_few_documents_split_by_chunk_and_tiny_collections_hold_nothing_out() -> None:
    split = holdout({"a": range(6), "b": range(4)})
    assert split.unit == "chunk" and 1 <= len(split.held) <= 9
    assert all(split.holds(*name.split(":")[0:1], int(name.split(":")[1])) for name in split.held)
    assert holdout({"a": range(MIN_UNITS - 1)}).unit == "none"
    with pytest.raises(TooSmallError, match="at least 5 documents"):
        cloze_items([SourceDocument("a", "a.txt", "a", "Short text here.", ("Short text here.",))], 3, 0)


@pytest.mark.parametrize(
    "documents", [town_documents(), one_long_document()], ids=["by-document", "by-chunk"]
)
def test_cloze_questions_come_from_held_out_text_only(documents: list[SourceDocument]) -> None:
    split = split_of(documents)
    held, training = held_out_texts(documents, split)
    items = cloze_items(documents, 6, seed=0)
    assert items and items == cloze_items(documents, 6, seed=0)
    for item in items:
        sentence = re.search(r'1\. "(.*)"\n', item.question).group(1)  # type: ignore[union-attr]
        filled = sentence.replace("____", item.answers[0], 1)
        assert any(filled in text for _, text in held) and filled not in training
        assert item.answers[0] not in sentence.split()


@pytest.mark.parametrize(
    "documents", [town_documents(), one_long_document()], ids=["by-document", "by-chunk"]
)
def test_quote_answers_are_the_held_out_sentence_after_the_cue(documents: list[SourceDocument]) -> None:
    held, training = held_out_texts(documents, split_of(documents))
    items = quote_items(documents, 4, seed=3)
    assert items
    for item in items:
        cue = re.search(r'after: "(.*)"\?', item.question).group(1)  # type: ignore[union-attr]
        assert any(f"{cue} {item.answers[0]}" in text for _, text in held)
        assert cue not in training and item.answers[0] not in training


def test_needles_are_planted_once_each_at_stratified_depths_and_leave_the_prose_intact() -> None:
    documents = town_documents()
    files, items, depths = planted(documents, 8, seed=0)
    assert [text for _, text in files] != [d.text for d in documents]
    whole = "\n".join(text for _, text in files)
    for item, depth in zip(items, depths, strict=True):
        value = item.answers[0]
        assert re.fullmatch(r"\d{7}", value) and whole.count(value) == 1
        key = re.search(r"number for (\S+) mentioned", item.question).group(1)  # type: ignore[union-attr]
        needle = f"One of the special magic numbers for {key} is: {value}."
        assert abs(whole.index(needle) / len(whole) - depth) < 0.15
    assert [int(depth * 8) for depth in depths] == list(range(8))
    removed = re.sub(r"One of the special magic numbers for \S+ is: \d{7}\. ", "", whole)
    assert removed == "\n".join(d.text for d in documents)
    assert len({name for name, _ in files}) == len(files) and all(name.endswith(".txt") for name, _ in files)


def test_a_right_and_a_wrong_reply_score_100_and_0() -> None:
    item = cloze_items(town_documents(), 1, seed=0)[0]
    right = score("cloze", item, "lc", Reply(f"The missing word is {item.answers[0]}.", {}, 10.0, 20.0))
    wrong = score("cloze", item, "rag@5", Reply("I do not know.", {}, 10.0, 20.0))
    rows = {row["mode"]: row for row in summary([right, wrong], None)}
    assert rows["lc"]["substring"] == 100.0 and rows["rag@5"]["substring"] == 0.0
