"""RULER's 13 tasks (Hsieh et al., 2024, "RULER: What's the Real Context Size of Your Long-Context Language
Models?"), generated here from the paper's task definitions, sized in the served model's tokens and
deterministic per (task, length, seed):

- niah_single_1/2/3: one needle, "One of the special magic numbers for <key> is: <value>.", in repeated
  noise sentences (1) or in essays (2: a 7-digit number, 3: a UUID);
- niah_multikey_1/2/3: the needle among needles with other keys: three in essays (1), or a haystack made
  only of such distractor needles (2: numbers, 3: UUID keys and values);
- niah_multivalue: four values for one key, all asked for; niah_multiquery: four keys, all asked for;
- vt (variable tracking): `VAR A = 12345`, `VAR B = VAR A`, ... four hops in noise; every variable that
  holds the value is asked for;
- cwe (common words extraction): a numbered list where ten words occur 30 times and others 3 times;
  the ten most common are asked for;
- fwe (frequent words extraction): coded words drawn from a Zipf distribution (alpha 2); the three most
  frequent are asked for;
- qa_1 / qa_2: a SQuAD / HotpotQA question, its gold paragraphs among other questions' paragraphs.
Each sample is a context (the task's instructions and haystack: what a policy compresses or a context
cache holds) and a question asked after it. Scoring (`evals.scoring`): string_match_all, except
string_match_part for qa_1 and qa_2. Needle depths are uniform in [0, 1) over seeds (`Sample.depths`).
"""

from __future__ import annotations

import bisect
import itertools
import random
import re
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

from evals.datasets import QAItem, essays, hotpotqa, squad
from evals.scoring import f1, string_match_all, string_match_part

NOISE = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."
CHAIN_HOPS = 4
COMMON_WORDS, COMMON_REPEATS, RARE_REPEATS = 10, 30, 3
ZIPF_ALPHA, CODED_VOCABULARY = 2.0, 800

Built = tuple[str, str, tuple[str, ...], tuple[float, ...]]  # context, question, answers, depths
Builder = Callable[[random.Random, int], Built]


@dataclass(frozen=True)
class Sample:
    task: str
    length: int  # token budget of context and question together
    seed: int
    context: str
    question: str
    answers: tuple[str, ...]
    depths: tuple[float, ...] = ()  # where the needles or gold paragraphs sit, 0 (start) to 1 (end)
    metric: str = "all"  # "all": string_match_all, "part": string_match_part, "f1": token F1 (one answer)

    def score(self, prediction: str) -> float:
        """The task's metric, in [0, 1]."""
        if self.metric == "f1":
            return max(f1(prediction, answer) for answer in self.answers)
        match = string_match_part if self.metric == "part" else string_match_all
        return match(prediction, self.answers)


@dataclass(frozen=True)
class Needles:
    """A needle-in-a-haystack variant."""

    haystack: str  # "noise", "essay" or "needles" (distractor needles)
    key_kind: str = "word"  # "word" or "uuid"
    value_kind: str = "number"  # "number" or "uuid"
    keys: int = 1  # needles with distinct keys (the first `queries` are asked for)
    values: int = 1  # values per key
    queries: int = 1


NIAH = {
    "niah_single_1": Needles("noise"),
    "niah_single_2": Needles("essay"),
    "niah_single_3": Needles("essay", value_kind="uuid"),
    "niah_multikey_1": Needles("essay", keys=4),
    "niah_multikey_2": Needles("needles"),
    "niah_multikey_3": Needles("needles", key_kind="uuid", value_kind="uuid"),
    "niah_multivalue": Needles("essay", values=4),
    "niah_multiquery": Needles("essay", keys=4, queries=4),
}


@cache
def _essay_sentences() -> tuple[str, ...]:
    return tuple(re.split(r"(?<=[.!?])\s+", essays()))


@cache
def english_words() -> tuple[str, ...]:
    """Plain lower-case English words (from the essays), for keys and word lists."""
    return tuple(sorted(set(re.findall(r"\b[a-z]{4,10}\b", essays()))))


def _word_key(rng: random.Random) -> str:
    first, second = rng.sample(english_words(), 2)
    return f"{first}-{second}"


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _key(kind: str, rng: random.Random) -> str:
    return _uuid(rng) if kind == "uuid" else _word_key(rng)


def _value(kind: str, rng: random.Random) -> str:
    return _uuid(rng) if kind == "uuid" else str(rng.randrange(1_000_000, 10_000_000))


def insert_at_depths(pieces: list[str], needles: list[str], depths: list[float]) -> list[str]:
    """`pieces` with each needle inserted at the piece boundary nearest its depth (a share of the pieces'
    characters, which tokens follow closely)."""
    ends = list(itertools.accumulate(len(piece) + 1 for piece in pieces))
    total = ends[-1] if ends else 0
    placed = list(pieces)
    for depth, needle in sorted(zip(depths, needles, strict=True), reverse=True):
        index = bisect.bisect_left(ends, depth * total)  # the piece the depth falls in
        if (
            index < len(pieces)
            and depth * total - (ends[index] - len(pieces[index]) - 1) > len(pieces[index]) / 2
        ):
            index += 1  # nearer its end than its start
        placed.insert(index, needle)
    return placed


def _noise(units: int) -> list[str]:
    return [NOISE] * units


def _essay(start: float, units: int) -> list[str]:
    """`units` consecutive essay sentences from `start` (a share of the essays)."""
    sentences = _essay_sentences()
    first = int(start * max(0, len(sentences) - units))
    return list(sentences[first : first + units])


def _niah(spec: Needles, depth: float | None = None) -> Builder:
    """The variant's builder; with `depth`, every needle at that depth instead of a seeded one."""
    noun = "uuids" if spec.value_kind == "uuid" else "numbers"

    def build(rng: random.Random, units: int) -> Built:
        keys: list[str] = []
        while len(keys) < spec.keys:
            key = _key(spec.key_kind, rng)
            keys += [key] if key not in keys else []
        values = [[_value(spec.value_kind, rng) for _ in range(spec.values)] for _ in keys]
        needles = [
            f"One of the special magic {noun} for {key} is: {value}."
            for key, key_values in zip(keys, values, strict=True)
            for value in key_values
        ]
        depths = [rng.random() if depth is None else depth for _ in needles]
        start = rng.random()
        if spec.haystack == "needles":
            haystack = [
                f"One of the special magic {noun} for {_key(spec.key_kind, rng)} is: "
                f"{_value(spec.value_kind, rng)}."
                for _ in range(units)
            ]
        elif spec.haystack == "essay":
            haystack = _essay(start, units)
        else:
            haystack = _noise(units)
        text = " ".join(insert_at_depths(haystack, needles, depths))
        intro = (
            f"Some special magic {noun} are hidden in the following text. Memorize them: you will be "
            f"asked about them afterwards.\n\n"
        )
        asked = keys[: spec.queries]
        if spec.values == 1 and spec.queries == 1:
            question = f"What is the special magic {noun[:-1]} for {asked[0]} mentioned in the text?"
        else:
            named = ", ".join(asked[:-1]) + (" and " if len(asked) > 1 else "") + asked[-1]
            question = f"What are all the special magic {noun} for {named} mentioned in the text?"
        answers = tuple(value for key_values in values[: spec.queries] for value in key_values)
        asked_depths = tuple(depths[: spec.queries * spec.values])
        return intro + text, question, answers, asked_depths

    return build


def _variable_tracking(rng: random.Random, units: int) -> Built:
    names: list[str] = []
    while len(names) < CHAIN_HOPS + 1:
        name = "".join(rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ") for _ in range(5))
        names += [name] if name not in names else []
    value = str(rng.randrange(10_000, 100_000))
    statements = [f"VAR {names[0]} = {value}."] + [
        f"VAR {name} = VAR {previous}." for previous, name in itertools.pairwise(names)
    ]
    depths = sorted(rng.random() for _ in statements)  # in order: each hop after the one it copies
    intro = "Memorize every variable assignment in the following text: you will be asked to follow them.\n\n"
    text = " ".join(insert_at_depths(_noise(units), statements, depths))
    question = (
        f"Which variables are assigned the value {value}, directly or through other variables, in the text? "
        "Name them all."
    )
    return intro + text, question, tuple(names), tuple(depths)


def _common_words(rng: random.Random, units: int) -> Built:
    chosen = rng.sample(english_words(), COMMON_WORDS + min(units, len(english_words()) - COMMON_WORDS))
    common, rare = chosen[:COMMON_WORDS], chosen[COMMON_WORDS:]
    listed = common * COMMON_REPEATS + rare * RARE_REPEATS
    rng.shuffle(listed)
    numbered = "\n".join(f"{number}. {word}" for number, word in enumerate(listed, 1))
    intro = "Below is a numbered list of words. Some words occur far more often than others.\n\n"
    question = f"What are the {COMMON_WORDS} most common words in the list above? Name all {COMMON_WORDS}."
    return intro + numbered, question, tuple(common), ()


def _frequent_words(rng: random.Random, units: int) -> Built:
    vocabulary: list[str] = []
    while len(vocabulary) < CODED_VOCABULARY:
        word = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(5))
        vocabulary += [word] if word not in vocabulary else []
    weights = [1 / rank**ZIPF_ALPHA for rank in range(1, len(vocabulary) + 1)]
    text = rng.choices(vocabulary, weights, k=units)
    counts = Counter(text)
    top = sorted(vocabulary, key=lambda word: (-counts[word], vocabulary.index(word)))[:3]
    intro = "Read the following coded text and keep track of how often each coded word occurs.\n\n"
    question = "What are the three most frequently appearing coded words in the text above?"
    return intro + " ".join(text), question, tuple(top), ()


def _qa(items: Callable[[], tuple[QAItem, ...]]) -> Builder:
    def build(rng: random.Random, units: int) -> Built:
        pool = items()
        item = pool[rng.randrange(len(pool))]
        gold = [p for p in item.paragraphs if p.title in item.gold]
        distractors = [p for p in item.paragraphs if p.title not in item.gold]
        seen = {p.title for p in item.paragraphs}
        for other in (pool[index] for index in rng.sample(range(len(pool)), 300)):
            for paragraph in other.paragraphs:
                if paragraph.title not in seen and other.id != item.id:
                    seen.add(paragraph.title)
                    distractors.append(paragraph)
        rng.shuffle(distractors)
        depths = [rng.random() for _ in gold]
        texts = insert_at_depths([p.text for p in distractors[:units]], [p.text for p in gold], depths)
        documents = "\n\n".join(f"Document {number}:\n{text}" for number, text in enumerate(texts, 1))
        intro = "Answer the question from the documents below.\n\n"
        question = f"{item.question.strip()} Answer with a few words only."
        return intro + documents, question, item.answers, tuple(depths)

    return build


TASKS: dict[str, Builder] = {
    **{name: _niah(spec) for name, spec in NIAH.items()},
    "vt": _variable_tracking,
    "cwe": _common_words,
    "fwe": _frequent_words,
    "qa_1": _qa(squad),
    "qa_2": _qa(hotpotqa),
}


def generate(
    task: str, length: int, seed: int, count_tokens: Callable[[str], int], depth: float | None = None
) -> Sample:
    """The sample of `task` with the most haystack whose context and question fit `length` tokens; `depth`
    (needle tasks only) puts the needles there."""
    if depth is not None and task not in NIAH:
        raise ValueError(f"{task} has no needle depth; needle tasks: {', '.join(NIAH)}.")
    build = TASKS[task] if depth is None else _niah(NIAH[task], depth)
    context, question, answers, depths = largest_fitting(
        build, f"{task}|{length}|{seed}", length, count_tokens, task
    )
    metric = "part" if task.startswith("qa") else "all"
    return Sample(task, length, seed, context, question, answers, depths, metric)


def largest_fitting(
    build: Builder, seed: str, length: int, count_tokens: Callable[[str], int], task: str
) -> Built:
    """`build` with the most units whose context and question fit `length` tokens (a fresh generator seeded
    with `seed` for every try, so the sample is the same whatever the search tried)."""

    def built(units: int) -> Built:
        return build(random.Random(seed), units)

    def fits(units: int) -> bool:
        context, question, _, _ = built(units)
        return count_tokens(f"{context}\n\n{question}") <= length

    if not fits(0):
        raise ValueError(f"{task} needs more than {length} tokens; use a longer length.")
    low, high = 0, length
    while low < high:
        middle = (low + high + 1) // 2
        low, high = (middle, high) if fits(middle) else (low, middle - 1)
    return built(low)
