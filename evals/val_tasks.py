"""VaL probing (An et al., 2024, "Make Your LLM Fully Utilize the Context", the IN2 paper): three kinds of
context and three retrieval directions, the target placed at a chosen depth, generated here from the paper's
task descriptions, sized in the served model's tokens and deterministic per (task, length, depth, seed):

- `document` (bi-directional): sentences of real prose (HotpotQA's Wikipedia paragraphs); given a few words
  from the middle of one sentence, quote that whole sentence (token F1 with it);
- `code` (backward): generated Python functions; given one line of a function's body, name the function
  (the name must be in the answer);
- `structured` (forward): a table of entities (id, label, description); given an id, give the label (the
  label must be in the answer).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from functools import cache

from evals.datasets import hotpotqa
from evals.ruler_tasks import Built, Sample, english_words, insert_at_depths, largest_fitting

FRAGMENT_WORDS = 5
SENTENCE_POOL = 4000


@cache
def _sentences() -> tuple[str, ...]:
    """Sentences of HotpotQA paragraphs with at least 12 words, in a fixed order."""
    found = []
    for item in hotpotqa()[:3000]:
        for paragraph in item.paragraphs:
            found += [s.strip() for s in paragraph.text.split(". ") if len(s.split()) >= 12]
    return tuple(dict.fromkeys(sentence.rstrip(".") + "." for sentence in found))


def _document(depth: float) -> Callable[[random.Random, int], Built]:
    def build(rng: random.Random, units: int) -> Built:
        pool = rng.sample(_sentences(), SENTENCE_POOL)
        target, others = pool[0], pool[1:]
        words = target.split()
        start = rng.randrange(2, len(words) - FRAGMENT_WORDS - 1)  # words on both sides
        fragment = " ".join(words[start : start + FRAGMENT_WORDS])
        text = " ".join(insert_at_depths(others[:units], [target], [depth]))
        question = f'Quote the whole sentence of the text above that contains the words "{fragment}".'
        return f"Read the following text.\n\n{text}", question, (target,), (depth,)

    return build


def _function(rng: random.Random, taken: set[str]) -> tuple[str, list[str]]:
    """A small function with a fresh name and its body lines, each line unique through its constants."""
    while True:
        name = "_".join(rng.sample(english_words(), 2))
        if name not in taken:
            taken.add(name)
            break
    constants = []
    while len(constants) < 3:
        constant = str(rng.randrange(100, 100_000))
        if constant not in taken:  # every body line is unique in the code
            taken.add(constant)
            constants.append(constant)
    a, b, c = constants
    body = [f"total = value * {a}", f"total = total + {b}", f"return total - {c}"]
    return name, body


def _code(depth: float) -> Callable[[random.Random, int], Built]:
    def build(rng: random.Random, units: int) -> Built:
        taken: set[str] = set()
        target, target_body = _function(rng, taken)
        line = rng.choice(target_body)
        others = [_function(rng, taken) for _ in range(units)]
        source = [f"def {name}(value):\n" + "".join(f"    {b}\n" for b in body) for name, body in others]
        target_source = f"def {target}(value):\n" + "".join(f"    {b}\n" for b in target_body)
        code = "\n".join(insert_at_depths(source, [target_source], [depth]))
        question = f"Which function in the code above contains the line `{line}`? Answer with its name."
        return f"Read the following Python code.\n\n{code}", question, (target,), (depth,)

    return build


def _structured(depth: float) -> Callable[[random.Random, int], Built]:
    def build(rng: random.Random, units: int) -> Built:
        ids = rng.sample(range(100_000, 1_000_000), units + 1)
        rows = [
            (str(i), "-".join(rng.sample(english_words(), 2)), " ".join(rng.sample(english_words(), 4)))
            for i in ids
        ]
        lines = [f"| {i} | {lab} | {description} |" for i, lab, description in rows]
        (target_id, label, _), target_line = rows[0], lines[0]
        table = "\n".join(
            ["| id | label | description |", *insert_at_depths(lines[1:], [target_line], [depth])]
        )
        question = f"In the table above, what is the label of the entity with id {target_id}?"
        return f"Read the following table of entities.\n\n{table}", question, (label,), (depth,)

    return build


TASKS = {"document": _document, "code": _code, "structured": _structured}


def generate(task: str, length: int, depth: float, seed: int, count_tokens: Callable[[str], int]) -> Sample:
    """The `task` probe with its target at `depth` and as much context as fits `length` tokens."""
    build = TASKS[task](depth)
    seeded = f"val|{task}|{length}|{round(depth, 4)}|{seed}"
    context, question, answers, depths = largest_fitting(build, seeded, length, count_tokens, task)
    metric = "f1" if task == "document" else "all"
    return Sample(f"val_{task}", length, seed, context, question, answers, depths, metric)
