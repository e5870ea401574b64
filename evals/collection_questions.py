"""Held-out questions about the user's own collection, made by lcrag's own generators and checkable without a
judge. Every question comes from the held-out side of the collection's split (`finetune.holdout`, the split
`lcrag finetune` trains without), so no adapter trained on the collection has seen it:

- `cloze` (multidoc's questions, in the wording `lcrag finetune --recipe multidoc` trains on): a sentence
  of a held-out document with one word blanked; the answer is the word;
- `quote` (in2's fine-grained questions): a held-out sentence as a cue; the answer is the sentence after it,
  word for word;
- `needle`: RULER-style facts ("One of the special magic numbers for <key> is: <7 digits>.") planted at
  uniform depths of a copy of the collection (keys are two of the collection's own words); the answer is
  the number.

A cue or cloze sentence must occur once in the whole collection and never in its training side. Questions
are deterministic for (collection, seed).
"""

from __future__ import annotations

import itertools
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass

from evals.datasets import QAItem
from finetune.data.multidoc import Cloze, blankable_words, is_cloze_sentence, question_text
from finetune.holdout import HOLDOUT_SEED, Holdout, holdout

KINDS = ("cloze", "quote", "needle")
QUOTE = 'In the documents, which sentence comes right after: "{cue}"? Quote it exactly.'
NEEDLE = "One of the special magic numbers for {key} is: {value}."
NEEDLE_QUESTION = "What is the special magic number for {key} mentioned in the documents?"
SENTENCE_SPLIT = re.compile(r"(?<=[.!?])\s+|\n\s*\n")  # sentence ends and blank lines
MAX_QUOTE_WORDS = 40
KEY_WORD = re.compile(r"\b[a-z]{5,10}\b")


class TooSmallError(ValueError):
    """The collection has too little held-out text for the questions asked; the message says why."""


@dataclass(frozen=True)
class SourceDocument:
    """A collection's document as the server returns it (`GET .../documents/{doc_id}`)."""

    doc_id: str
    name: str
    title: str
    text: str
    chunks: tuple[str, ...]  # chunk texts by chunk index


def split_of(documents: Sequence[SourceDocument]) -> Holdout:
    """The split `lcrag finetune` trains with (its default holdout seed, whatever the questions' seed)."""
    return holdout({d.doc_id: range(len(d.chunks)) for d in documents}, HOLDOUT_SEED)


def held_out_texts(documents: Sequence[SourceDocument], split: Holdout) -> tuple[list[tuple[str, str]], str]:
    """(doc_id, text) of every held-out unit, and all the training side's text joined."""
    if split.unit == "none":
        raise TooSmallError(
            "The collection is too small to hold questions out of training: it needs at least 5 documents "
            "or 5 chunks."
        )
    held, training = [], []
    for document in documents:
        if split.unit == "document":
            (held if document.doc_id in split.held else training).append((document.doc_id, document.text))
            continue
        for index, text in enumerate(document.chunks):
            (held if split.holds(document.doc_id, index) else training).append((document.doc_id, text))
    return held, "\n".join(text for _, text in training)


def _fresh_sentences(documents: Sequence[SourceDocument], split: Holdout) -> list[tuple[str, list[str]]]:
    """Per held-out unit: its sentences, each blanked to "" unless it occurs once in the collection and never
    on the training side."""
    held, training = held_out_texts(documents, split)
    everything = "\n".join(d.text for d in documents)
    units = []
    for doc_id, text in held:
        # a sentence cut at a chunk's edge lies in the neighbouring (overlapping) chunk too: a training
        # neighbour rules it out below
        sentences = [s.strip() for s in SENTENCE_SPLIT.split(text) if s.strip()]
        units.append(
            (doc_id, [s if everything.count(s) == 1 and s not in training else "" for s in sentences])
        )
    return units


def cloze_items(documents: Sequence[SourceDocument], count: int, seed: int) -> list[QAItem]:
    """`count` cloze questions from held-out sentences, spread over the held-out units."""
    units = _fresh_sentences(documents, split_of(documents))
    candidates = [
        (doc_id, sentence)
        for doc_id, sentences in units
        for sentence in sentences
        if sentence and is_cloze_sentence(sentence)
    ]
    rng = random.Random(f"collection-cloze:{seed}")
    chosen = _spread(candidates, count, rng, "cloze sentences")
    items = []
    for number, (doc_id, sentence) in enumerate(chosen):
        cloze = Cloze(doc_id, _flat(sentence), rng.choice(blankable_words(sentence)))
        question = question_text([cloze])
        items.append(QAItem(f"cloze-{seed}-{number}", question, (cloze.word,), (), frozenset({doc_id})))
    return items


def quote_items(documents: Sequence[SourceDocument], count: int, seed: int) -> list[QAItem]:
    """`count` "which sentence comes next" questions whose cue and answer are held-out sentences."""
    units = _fresh_sentences(documents, split_of(documents))
    candidates = [
        (doc_id, (cue, after))
        for doc_id, sentences in units
        for cue, after in itertools.pairwise(sentences)
        if cue and after and len(cue.split()) >= 5 and 3 <= len(after.split()) <= MAX_QUOTE_WORDS
    ]
    rng = random.Random(f"collection-quote:{seed}")
    chosen = _spread(candidates, count, rng, "pairs of consecutive sentences")
    return [
        QAItem(
            f"quote-{seed}-{number}", QUOTE.format(cue=_flat(cue)), (_flat(after),), (), frozenset({doc_id})
        )
        for number, (doc_id, (cue, after)) in enumerate(chosen)
    ]


def planted(
    documents: Sequence[SourceDocument], count: int, seed: int
) -> tuple[list[tuple[str, str]], list[QAItem], list[float]]:
    """A copy of the collection with `count` needles planted at stratified uniform depths of its text:
    the (file name, text) files to upload in order, the questions, and each needle's depth (0 = start)."""
    rng = random.Random(f"collection-needle:{seed}")
    words = sorted(set(KEY_WORD.findall(" ".join(d.text for d in documents).lower())))
    if len(words) < 2:
        raise TooSmallError("The collection has too few words to make needle keys from.")
    total = sum(len(d.text) for d in documents)
    if total == 0:
        raise TooSmallError("The collection's documents hold no text.")
    depths = [(i + rng.random()) / count for i in range(count)]
    texts = [d.text for d in documents]
    items = []
    placements: list[tuple[int, int, str]] = []  # (document, character offset, needle)
    starts = [sum(len(t) for t in texts[:i]) for i in range(len(texts))]
    for number, depth in enumerate(depths):
        key, value = "-".join(rng.sample(words, 2)), str(rng.randrange(1_000_000, 10_000_000))
        offset = depth * total
        index = max(i for i, start in enumerate(starts) if start <= offset)
        placements.append(
            (
                index,
                _sentence_boundary(texts[index], int(offset - starts[index])),
                NEEDLE.format(key=key, value=value),
            )
        )
        question = NEEDLE_QUESTION.format(key=key)
        items.append(
            QAItem(f"needle-{seed}-{number}", question, (value,), (), frozenset({documents[index].doc_id}))
        )
    for index, at, needle in sorted(placements, reverse=True):
        texts[index] = f"{texts[index][:at]}{needle} {texts[index][at:]}"
    files = [(_text_file_name(d, i), text) for i, (d, text) in enumerate(zip(documents, texts, strict=True))]
    return files, items, depths


def _flat(text: str) -> str:
    """`text` on one line (documents wrapped at a fixed width read as prose)."""
    return " ".join(text.split())


def _sentence_boundary(text: str, offset: int) -> int:
    """The start of the first sentence at or after `offset` (the text's end if there is none)."""
    if offset <= 0:
        return 0
    found = SENTENCE_SPLIT.search(text, offset)
    return found.end() if found else len(text)


def _text_file_name(document: SourceDocument, position: int) -> str:
    """A unique plain-text file name for a document's copy (its text is uploaded, whatever its format)."""
    stem = re.sub(r"[^\w.,()-]", "_", document.name.rsplit(".", 1)[0])[:100] or "document"
    return f"{position:04d}-{stem}.txt"


def _spread(candidates: list[tuple[str, object]], count: int, rng: random.Random, what: str) -> list:
    """`count` candidates drawn round-robin over their documents (so one long document cannot take all)."""
    if not candidates:
        raise TooSmallError(f"The collection's held-out part has no usable {what}.")
    by_doc: dict[str, list] = {}
    for candidate in candidates:
        by_doc.setdefault(candidate[0], []).append(candidate)
    for group in by_doc.values():
        rng.shuffle(group)
    order = sorted(by_doc)
    rng.shuffle(order)
    chosen: list = []
    while len(chosen) < count and any(by_doc.values()):
        for doc_id in order:
            if by_doc[doc_id] and len(chosen) < count:
                chosen.append(by_doc[doc_id].pop())
    return chosen
