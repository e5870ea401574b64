"""The part of a collection that fine-tuning never sees, so `lcrag eval collection` asks only questions no
adapter trained on.

The unit held out is the document when the collection has at least `MIN_UNITS` documents, else the chunk
(a collection of one long PDF still gets held-out questions). A unit is held out when a seeded hash of its id,
read as a number in [0, 1), is below the share: the same collection and seed always give the same split, in
`lcrag finetune` and in `lcrag eval collection` alike, and adding documents never moves an old one across
the split (save where the rule's floor decides: at least one unit is held out, and at least one is not).
With fewer than `MIN_UNITS` chunks nothing is held out (and the eval says the collection is too small).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

HOLDOUT_SHARE = 0.2
HOLDOUT_SEED = 0  # `lcrag finetune` and `lcrag eval collection` split with this seed
MIN_UNITS = 5


@dataclass(frozen=True)
class Holdout:
    """Which documents (`unit == "document"`) or chunks ("<doc_id>:<index>") are held out."""

    unit: Literal["document", "chunk", "none"]
    held: frozenset[str]

    def holds(self, doc_id: str, chunk_index: int) -> bool:
        """Whether chunk `chunk_index` of document `doc_id` is held out of training."""
        if self.unit == "document":
            return doc_id in self.held
        return f"{doc_id}:{chunk_index}" in self.held


def holdout(
    chunks_by_doc: Mapping[str, Sequence[int]], seed: int = HOLDOUT_SEED, share: float = HOLDOUT_SHARE
) -> Holdout:
    """The split of a collection given as {doc_id: its chunk indexes}."""
    if not 0.0 <= share < 1.0:
        raise ValueError("The held-out share must be a fraction in [0, 1).")
    documents = sorted(chunks_by_doc)
    chunks = [f"{doc}:{index}" for doc in documents for index in chunks_by_doc[doc]]
    unit: Literal["document", "chunk"] = "document" if len(documents) >= MIN_UNITS else "chunk"
    units = documents if unit == "document" else chunks
    if len(units) < MIN_UNITS or share == 0.0:
        return Holdout("none", frozenset())
    ranked = sorted(units, key=lambda name: _draw(seed, name))
    held = [name for name in ranked if _draw(seed, name) < share] or ranked[:1]
    return Holdout(unit, frozenset(held[: len(units) - 1]))


def _draw(seed: int, name: str) -> float:
    """A unit's seeded number in [0, 1)."""
    digest = hashlib.sha256(f"lcrag-holdout:{seed}:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64
