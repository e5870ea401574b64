"""Deterministic English-like prose for benchmarks and tests: documents of varied sentences, no two alike,
and six town paragraphs, each holding facts found nowhere else (questions answered in exactly one)."""

from __future__ import annotations

import random

SUBJECTS = [
    "The harbour master", "A young engineer", "The village council", "An old ferryman", "The archivist",
    "A travelling merchant", "The school teacher", "The lighthouse keeper", "A botanist", "The miller",
]  # fmt: skip
VERBS = [
    "recorded",
    "repaired",
    "questioned",
    "described",
    "measured",
    "defended",
    "sold",
    "painted",
    "mapped",
]
OBJECTS = [
    "the northern bridge", "a ledger of grain prices", "the tidal charts", "a broken clock",
    "the orchard walls", "a shipment of copper", "the winter roads", "a letter from the capital",
    "the river banks", "a stone well",
]  # fmt: skip
TAILS = [
    "before the spring floods", "during the long drought", "with great care", "for the third time that year",
    "while the town slept", "to settle an old dispute", "at the request of the guild", "in plain view",
]  # fmt: skip


def document(seed: int, sentences: int) -> str:
    rng = random.Random(seed)
    lines = []
    for i in range(sentences):
        subject, verb, obj, tail = (rng.choice(words) for words in (SUBJECTS, VERBS, OBJECTS, TAILS))
        lines.append(f"{subject} {verb} {obj} {tail} (note {seed}-{i}).")
    return " ".join(lines)


def corpus(documents: int, sentences: int, seed: int = 0) -> list[tuple[str, str]]:
    """`documents` (name, text) pairs of `sentences` sentences each."""
    return [(f"doc-{seed}-{i:04d}.txt", document(seed * 100_003 + i, sentences)) for i in range(documents)]


TOWNS = [
    ("Arlen", "copper bells", "the spring tide", "a lighthouse painted green"),
    ("Brisk", "blue wool", "the first frost", "a bridge of seven arches"),
    ("Corvale", "pear cider", "midsummer night", "an observatory on the hill"),
    ("Dunmere", "salt fish", "the autumn fair", "a library with a glass roof"),
    ("Elsby", "clay pipes", "the winter market", "a clock tower that runs slow"),
    ("Fenwick", "rye bread", "the harvest moon", "a mill with red sails"),
]


def town_paragraph(name: str, trade: str, festival: str, landmark: str) -> str:
    return (
        f"The town of {name} is known for its {trade}, which merchants carry to every port on the coast. "
        f"Each year the people of {name} hold their great festival at {festival}, when the streets fill "
        f"with music and lanterns. Visitors to {name} always remember {landmark}, which the town council "
        f"repairs every decade with money raised from the trade in {trade}."
    )


def town_files(towns: list[tuple[str, str, str, str]] = TOWNS) -> list[tuple[str, str]]:
    """(file name, text) pairs, one town paragraph each: `arlen.txt`, `brisk.txt`, ..."""
    return [(f"{town[0].lower()}.txt", town_paragraph(*town)) for town in towns]


def towns_text(towns: list[tuple[str, str, str, str]] = TOWNS) -> str:
    return "\n\n".join(town_paragraph(*town) for town in towns)


def town_record(copy: int, name: str, trade: str, festival: str, landmark: str) -> str:
    """Copy `copy` of a town's record: a census sentence found nowhere else, then the town's paragraph
    (shared by every record of that town)."""
    return (
        f"Record {copy} of {name} notes that the census counted {1000 + 37 * copy} households in "
        f"{1700 + 9 * copy}. " + town_paragraph(name, trade, festival, landmark)
    )
