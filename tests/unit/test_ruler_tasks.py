"""RULER's generators: within their token budget, deterministic per seed, needles where their depth says and
uniform over seeds, the answers really the task's answers (counted in the text), and RULER's scoring a
known-right answer 100 and a known-wrong one 0."""

from __future__ import annotations

import re
from collections import Counter

import pytest

from evals.ruler_tasks import TASKS, generate


def count(text: str) -> int:
    """A cheap stand-in for a tokenizer: about four characters a token."""
    return len(text) // 4


@pytest.mark.parametrize("task", list(TASKS))
def test_each_task_fills_its_budget_deterministically_and_scores_right_and_wrong(task: str) -> None:
    sample = generate(task, 3000, 0, count)
    assert 2800 < count(f"{sample.context}\n\n{sample.question}") <= 3000
    assert generate(task, 3000, 0, count) == sample
    assert generate(task, 3000, 1, count) != sample
    assert sample.score(" and ".join(sample.answers)) == 1.0
    assert sample.score("I do not know.") == 0.0
    if task != "qa_2":  # HotpotQA's answers need not be verbatim in its paragraphs
        assert all(answer in sample.context for answer in sample.answers)


def test_a_length_too_short_for_the_task_is_an_error() -> None:
    with pytest.raises(ValueError, match="cwe needs more than 200 tokens"):
        generate("cwe", 200, 0, count)


def test_needles_sit_at_their_depth_and_depths_are_uniform_over_seeds() -> None:
    depths = []
    for seed in range(120):
        sample = generate("niah_single_2", 1500, seed, count)
        (depth,) = sample.depths
        haystack = sample.context.split("\n\n", 1)[1]  # after the task's instructions
        assert abs(haystack.index("One of the special magic") / len(haystack) - depth) < 0.03
        depths.append(depth)
    quarters = Counter(min(int(depth * 4), 3) for depth in depths)
    assert all(15 <= quarters[quarter] <= 45 for quarter in range(4)), quarters


def test_multi_needle_tasks_ask_for_every_value_of_their_keys() -> None:
    multivalue = generate("niah_multivalue", 2000, 3, count)
    key = re.search(r"numbers for (\S+) mentioned", multivalue.question).group(1)  # type: ignore[union-attr]
    assert len(multivalue.answers) == 4
    assert all(f"for {key} is: {value}." in multivalue.context for value in multivalue.answers)
    multiquery = generate("niah_multiquery", 2000, 3, count)
    assert len(multiquery.answers) == 4 and multiquery.score(multiquery.answers[0]) == 0.25
    multikey = generate("niah_multikey_2", 2000, 3, count)
    assert multikey.context.count("One of the special magic numbers for") > 20  # a haystack of needles


def test_variable_tracking_asks_for_the_whole_chain_in_order() -> None:
    sample = generate("vt", 2000, 5, count)
    first, *rest = sample.answers
    value = re.search(rf"VAR {first} = (\d+)\.", sample.context).group(1)  # type: ignore[union-attr]
    assert value in sample.question and len(rest) == 4
    positions = [sample.context.index(f"VAR {name} = ") for name in sample.answers]
    assert positions == sorted(positions)
    for previous, name in zip(sample.answers, rest, strict=False):
        assert f"VAR {name} = VAR {previous}." in sample.context


def test_word_tasks_answer_the_words_that_really_occur_most() -> None:
    common = generate("cwe", 3000, 2, count)
    listed = Counter(re.findall(r"^\d+\. (\w+)$", common.context, re.MULTILINE))
    assert {word for word, _ in listed.most_common(10)} == set(common.answers)
    assert min(listed[word] for word in common.answers) > max(
        n for word, n in listed.items() if word not in common.answers
    )
    frequent = generate("fwe", 3000, 2, count)
    coded = Counter(frequent.context.split("\n\n", 1)[1].split())
    assert [word for word, _ in coded.most_common(3)] == list(frequent.answers)


def test_a_fixed_depth_puts_every_needle_there_and_only_needle_tasks_take_one() -> None:
    for depth in (0.0, 0.5, 1.0):
        sample = generate("niah_single_2", 1500, 4, count, depth=depth)
        haystack = sample.context.split("\n\n", 1)[1]
        assert sample.depths == (depth,)
        assert abs(haystack.index("One of the special magic") / len(haystack) - depth) < 0.03
    with pytest.raises(ValueError, match="vt has no needle depth"):
        generate("vt", 1500, 0, count, depth=0.5)
