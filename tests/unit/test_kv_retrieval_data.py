"""The synthetic key-value retrieval recipe: deterministic, checkable, sized in tokens, positions covered."""

import json
import re
from collections import Counter
from pathlib import Path

import pytest

from finetune.data.kv_retrieval import KVRetrievalConfig, example, examples


@pytest.fixture(scope="module")
def tok(default_model_path: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(default_model_path)


def dictionaries_in(prompt: str) -> list[dict[str, str]]:
    return [
        json.loads(line.split("] ", 1)[1]) for line in prompt.splitlines() if line.startswith("Dictionary [")
    ]


def test_same_seed_same_examples_other_seed_other_examples(tok) -> None:
    config = KVRetrievalConfig(target_tokens=400)
    assert list(examples(tok, config, 3, seed=1)) == list(examples(tok, config, 3, seed=1))
    assert example(tok, config, 1, 0).messages != example(tok, config, 2, 0).messages


def test_the_answer_is_the_gold_keys_value_in_the_prompt(tok) -> None:
    for item in examples(tok, KVRetrievalConfig(target_tokens=600, digits=6), 5):
        prompt, answer = item.messages[0]["content"], item.messages[1]["content"]
        found = dictionaries_in(prompt)
        holders = [i for i, d in enumerate(found) if item.key in d]
        assert holders == [item.gold_position] and found[item.gold_position][item.key] == item.value
        assert answer == f"The value of key {item.key} is {item.value}." and len(item.value) == 6
        assert prompt.rstrip().endswith(f"Answer as: The value of key {item.key} is <value>.")


def test_prompts_are_sized_to_the_target_in_model_tokens(tok) -> None:
    for target in (300, 1500):
        item = example(tok, KVRetrievalConfig(target_tokens=target), 0, 0)
        assert target * 0.85 <= item.prompt_tokens <= target + 3
        assert item.prompt_tokens == len(tok(item.messages[0]["content"], add_special_tokens=False).input_ids)


def test_gold_positions_cover_every_position_and_can_be_fixed(tok) -> None:
    config = KVRetrievalConfig(dictionaries=5, target_tokens=400)
    positions = Counter(item.gold_position for item in examples(tok, config, 60))
    assert set(positions) == set(range(5)) and min(positions.values()) >= 5
    fixed = KVRetrievalConfig(dictionaries=5, gold_position=2)
    assert {item.gold_position for item in examples(tok, fixed, 5)} == {2}
    assert example(tok, fixed, 0, 0).depth == 0.5


def test_multi_subkey_distractors_differ_from_the_gold_key_in_one_subkey(tok) -> None:
    item = example(tok, KVRetrievalConfig(dictionaries=3, subkeys=3, keys_per_dictionary=4), 0, 0)
    gold = dictionaries_in(item.messages[0]["content"])[item.gold_position]
    parts = {key: re.findall(r"\d+", key) for key in gold}
    target = parts[item.key]
    assert len(target) == 3
    for key, other in parts.items():
        if key != item.key:
            assert sum(a != b for a, b in zip(other, target, strict=True)) == 1


@pytest.mark.parametrize(
    ("options", "phrase"),
    [
        ({"target_tokens": 10}, "target_tokens"),
        ({"answer_template": "It is {value}."}, "{key} and {value}"),
        ({"digits": 1}, "digits"),
        ({"dictionaries": 0}, "dictionaries"),
    ],
)
def test_bad_options_are_refused_with_the_reason(options: dict, phrase: str) -> None:
    with pytest.raises(ValueError, match=re.escape(phrase)):
        KVRetrievalConfig(**options)
