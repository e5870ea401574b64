"""The answer scorers against hand-worked examples, and a right and a wrong answer scoring 1 and 0."""

import pytest

from evals.scoring import (
    exact_match,
    f1,
    normalize_answer,
    string_match_all,
    string_match_part,
    substring_match,
)


def test_normalisation_drops_case_punctuation_articles_and_extra_spaces() -> None:
    assert normalize_answer("  The Eiffel   Tower, in Paris!") == "eiffel tower in paris"
    assert normalize_answer("An apple a day") == "apple day"
    assert normalize_answer("Theatre") == "theatre"  # 'the' only as a word


@pytest.mark.parametrize(
    ("prediction", "gold", "em", "score"),
    [
        ("the Eiffel Tower", "Eiffel Tower", 1.0, 1.0),
        ("Eiffel Tower in Paris", "Eiffel Tower", 0.0, 2 * (2 / 4) * 1.0 / (2 / 4 + 1.0)),  # p 1/2, r 1
        ("Paris", "Eiffel Tower", 0.0, 0.0),
        ("yes", "no", 0.0, 0.0),
        ("no, not really", "no", 0.0, 0.0),  # HotpotQA: yes/no must match exactly
        ("1,024 meters", "1024 meters", 1.0, 1.0),
    ],
)
def test_exact_match_and_f1_follow_the_hotpotqa_definition(
    prediction: str, gold: str, em: float, score: float
) -> None:
    assert exact_match(prediction, gold) == em
    assert f1(prediction, gold) == pytest.approx(score)


def test_substring_match_finds_the_gold_answer_inside_a_chatty_answer() -> None:
    assert substring_match("I think it was the Eiffel Tower, built in 1889.", "Eiffel Tower") == 1.0
    assert substring_match("It was the Louvre.", "Eiffel Tower") == 0.0
    assert substring_match("anything", "") == 0.0


def test_ruler_matchers_count_references_found_case_insensitively() -> None:
    references = ["4817", "Amber", "nine"]
    assert string_match_all("amber holds 4817", references) == pytest.approx(2 / 3)
    assert string_match_part("AMBER", references) == 1.0
    assert string_match_part("nothing here", references) == 0.0
    assert string_match_all("4817 amber nine", references) == 1.0 and string_match_all("x", []) == 0.0
