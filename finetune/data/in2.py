"""IN2-style long-context questions from the user's own documents, after An et al., "Make Your LLM Fully
Utilize the Context" (2024): the documents are cut into ~128-token segments, a long context is assembled
from shuffled segments, and each question needs one segment (fine-grained) or two (integration) placed at
random depths, so the model learns that information anywhere in the context matters.

Questions come from templates over the segment text and are always checkable: the answer is the sentence
that follows a quoted cue sentence, word for word (extractive). A share of examples uses a short context
(only a few segments) so short-context skills are kept. Each example records the depths of the segments it
needs. Deterministic for (seed, index).
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from rag.chunking import chunk_document
from rag.loaders import load_bytes

SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
FINE_GRAINED = 'In the context above, which sentence comes right after: "{cue}"? Quote it exactly.'
INTEGRATION = (
    'In the context above, which sentence comes right after "{cue}", and which comes right after '
    '"{cue2}"? Quote both exactly, in that order.'
)
MAX_ATTEMPTS = 50


@dataclass(frozen=True)
class In2Config:
    target_tokens: int = 4096
    segment_tokens: int = 128
    integration_share: float = 0.3  # questions that need two segments
    short_share: float = 0.1  # examples with a short context, to keep short-context skills
    short_tokens: int = 512

    def __post_init__(self) -> None:
        if not 0.0 <= self.integration_share <= 1.0 or not 0.0 <= self.short_share <= 1.0:
            raise ValueError("integration_share and short_share must be fractions in [0, 1]")
        if self.segment_tokens < 16 or self.target_tokens < 2 * self.segment_tokens:
            raise ValueError("segment_tokens must be >= 16 and target_tokens at least two segments")


@dataclass(frozen=True)
class Segment:
    text: str
    tokens: int

    @cached_property
    def sentences(self) -> list[str]:
        return [s.strip() for s in SENTENCE_END.split(self.text) if s.strip()]


@dataclass(frozen=True)
class In2Example:
    messages: list[dict[str, str]]
    kind: str  # fine_grained | integration
    answers: list[str]  # the sentences the answer must quote, in order
    depths: list[float]  # where each needed segment sits: 0 = first segment, 1 = last
    segments: int
    prompt_tokens: int

    def is_correct(self, reply: str) -> bool:
        """Every needed sentence quoted (whitespace-insensitive)."""
        flat = " ".join(reply.split())
        return all(" ".join(answer.split()) in flat for answer in self.answers)


def segments_of(documents: list[tuple[str, str]], tokenizer: Any, segment_tokens: int = 128) -> list[Segment]:
    """~`segment_tokens`-token segments of (name, text) documents, cut by the RAG chunker without overlap."""
    segments = []
    for name, text in documents:
        document = load_bytes(name if "." in name else f"{name}.txt", text.encode())
        for chunk in chunk_document(document, tokenizer, chunk_tokens=segment_tokens, overlap_tokens=0):
            segments.append(Segment(chunk.text, chunk.tokens))
    if not segments:
        raise ValueError("No text to build IN2 examples from: the documents are empty.")
    return segments


def example(segments: list[Segment], tokenizer: Any, config: In2Config, seed: int, index: int) -> In2Example:
    """Example `index` of the stream for `seed`."""
    rng = random.Random(f"in2:{seed}:{index}")
    askable = [i for i, segment in enumerate(segments) if len(segment.sentences) >= 2]
    kind = "integration" if rng.random() < config.integration_share and len(askable) >= 2 else "fine_grained"
    if not askable:
        raise ValueError("No segment has two sentences; IN2 questions need a cue and the sentence after it.")
    budget = config.short_tokens if rng.random() < config.short_share else config.target_tokens
    for _ in range(MAX_ATTEMPTS):
        needed = rng.sample(askable, 2 if kind == "integration" else 1)
        context_ids = _context(segments, needed, budget, rng)
        context = "\n\n".join(segments[i].text for i in context_ids)
        cues = [_cue(segments[i], rng) for i in needed]
        if all(context.count(cue) == 1 for cue, _ in cues):  # each cue must point at one place
            break
    else:
        raise ValueError("Could not find cue sentences that occur once; the documents repeat themselves.")
    template = INTEGRATION if kind == "integration" else FINE_GRAINED
    question = template.format(cue=cues[0][0], cue2=cues[-1][0])
    answers = [answer for _, answer in cues]
    prompt = f"{context}\n\n{question}"
    last = max(1, len(context_ids) - 1)
    depths = [context_ids.index(i) / last for i in needed]
    messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": " ".join(answers)}]
    tokens = len(tokenizer(prompt, add_special_tokens=False).input_ids)
    return In2Example(messages, kind, answers, depths, len(context_ids), tokens)


def _context(segments: list[Segment], needed: list[int], budget: int, rng: random.Random) -> list[int]:
    """Segment ids filling `budget` tokens: shuffled fillers with the needed ones at random places."""
    fillers = [i for i in range(len(segments)) if i not in needed]
    rng.shuffle(fillers)
    used = sum(segments[i].tokens + 2 for i in needed)
    chosen: list[int] = []
    for i in fillers:
        if used + segments[i].tokens + 2 > budget:
            break
        chosen.append(i)
        used += segments[i].tokens + 2
    for i in needed:
        chosen.insert(rng.randint(0, len(chosen)), i)
    return chosen


def _cue(segment: Segment, rng: random.Random) -> tuple[str, str]:
    """A sentence of the segment and the one after it."""
    position = rng.randrange(len(segment.sentences) - 1)
    return segment.sentences[position], segment.sentences[position + 1]
