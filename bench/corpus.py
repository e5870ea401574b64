"""Deterministic English-like prose for benchmarks: documents of varied sentences, no two alike."""

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
