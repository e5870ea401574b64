"""Synthetic numerical key-value retrieval, after Xiong et al., "From Artificial Needles to Real Haystacks"
(2024): a list of JSON dictionaries of random numeric keys and values, and a question about one key whose
dictionary sits at a controlled position. Training on such data improved 20-document MDQA at the middle
position by 10.5 % in the paper, without hurting general knowledge.

Multi-subkey variant (the paper's harder one): a key is a tuple of numbers, and the other keys of the gold
dictionary share all but one subkey with it, so the model must match the whole tuple.

Each example is deterministic for (seed, index), sized in model tokens to a target length, and written in
chat format: the user turn holds the dictionaries and the question, the assistant turn the templated answer.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

QUESTION = "Above are {count} JSON dictionaries. What is the value of key {key}? Answer as: {shape}"
DEFAULT_TEMPLATE = "The value of key {key} is {value}."


@dataclass(frozen=True)
class KVRetrievalConfig:
    """Options of the recipe; `dictionaries=None` fills the context up to `target_tokens`."""

    target_tokens: int = 2048
    dictionaries: int | None = None
    keys_per_dictionary: int = 4
    digits: int = 8
    subkeys: int = 1  # > 1: the multi-subkey variant
    answer_template: str = DEFAULT_TEMPLATE
    gold_position: int | None = None  # None: uniform over the dictionaries

    def __post_init__(self) -> None:
        problems = []
        if self.target_tokens < 64:
            problems.append("target_tokens must be at least 64")
        if self.dictionaries is not None and self.dictionaries < 1:
            problems.append("dictionaries must be at least 1")
        if self.keys_per_dictionary < 1 or self.digits < 2 or self.subkeys < 1:
            problems.append("keys_per_dictionary, subkeys must be >= 1 and digits >= 2")
        if "{key}" not in self.answer_template or "{value}" not in self.answer_template:
            problems.append("answer_template must contain {key} and {value}")
        if problems:
            raise ValueError("; ".join(problems))


@dataclass(frozen=True)
class KVRetrievalExample:
    messages: list[dict[str, str]]  # user (dictionaries + question), assistant (answer)
    key: str
    value: str
    gold_position: int  # index of the dictionary holding the key
    dictionaries: int
    prompt_tokens: int

    @property
    def depth(self) -> float:
        """Where the gold dictionary sits: 0 = first, 1 = last."""
        return self.gold_position / max(1, self.dictionaries - 1)

    def to_json(self) -> str:
        return json.dumps({**asdict(self), "depth": self.depth})


class _Numbers:
    """Random numbers of fixed width, never repeated within one example."""

    def __init__(self, rng: random.Random, digits: int) -> None:
        self.rng, self.low, self.high = rng, 10 ** (digits - 1), 10**digits - 1
        self.used: set[int] = set()

    def __call__(self) -> str:
        while (number := self.rng.randint(self.low, self.high)) in self.used:
            pass
        self.used.add(number)
        return str(number)


def _key(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else "(" + ", ".join(parts) + ")"


def _dictionary(
    numbers: _Numbers, config: KVRetrievalConfig, gold: list[str] | None = None
) -> dict[str, str]:
    """Random keys; around a `gold` key, the other keys differ from it in exactly one subkey."""
    keys = []
    for index in range(config.keys_per_dictionary):
        if gold is not None and config.subkeys > 1 and index > 0:
            parts = list(gold)
            parts[index % config.subkeys] = numbers()
        else:
            parts = [numbers() for _ in range(config.subkeys)]
        keys.append(parts)
    if gold is not None:
        keys[0] = gold
        numbers.rng.shuffle(keys)
    return {_key(parts): numbers() for parts in keys}


def _render(dictionaries: list[dict[str, str]], key: str, template: str) -> str:
    lines = [f"Dictionary [{i + 1}] {json.dumps(d)}" for i, d in enumerate(dictionaries)]
    shape = template.format(key=key, value="<value>")
    return "\n".join(lines) + "\n\n" + QUESTION.format(count=len(dictionaries), key=key, shape=shape)


def example(tokenizer: Any, config: KVRetrievalConfig, seed: int, index: int) -> KVRetrievalExample:
    """Example `index` of the stream for `seed` (the same inputs always give the same example)."""
    rng = random.Random(f"kv_retrieval:{seed}:{index}")
    numbers = _Numbers(rng, config.digits)
    gold_parts = [numbers() for _ in range(config.subkeys)]
    key = _key(gold_parts)
    gold = _dictionary(numbers, config, gold_parts)
    others: list[dict[str, str]] = []

    def tokens_of(count: int) -> int:  # the gold's position barely changes the count; it is drawn after
        while len(others) < count - 1:
            others.append(_dictionary(numbers, config))
        return _count_tokens(tokenizer, _render([gold, *others[: count - 1]], key, config.answer_template))

    count = config.dictionaries or _fit(tokens_of, config.target_tokens)
    tokens_of(count)
    if config.gold_position is not None and config.gold_position >= count:
        raise ValueError(f"gold_position {config.gold_position} needs more than {count} dictionaries")
    position = config.gold_position if config.gold_position is not None else rng.randrange(count)
    dictionaries = [*others[:position], gold, *others[position : count - 1]]
    prompt = _render(dictionaries, key, config.answer_template)
    answer = config.answer_template.format(key=key, value=gold[key])
    messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]
    return KVRetrievalExample(messages, key, gold[key], position, count, _count_tokens(tokenizer, prompt))


def _fit(tokens_of: Any, target: int) -> int:
    """The most dictionaries whose prompt stays within `target` tokens (at least one)."""
    count = 1
    while tokens_of(count * 2) <= target:
        count *= 2
    low, high = count, count * 2
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (middle, high) if tokens_of(middle) <= target else (low, middle)
    return low


def _count_tokens(tokenizer: Any, text: str) -> int:
    return len(tokenizer(text, add_special_tokens=False).input_ids)


def examples(
    tokenizer: Any, config: KVRetrievalConfig, count: int, seed: int = 0
) -> Iterator[KVRetrievalExample]:
    for index in range(count):
        yield example(tokenizer, config, seed, index)
