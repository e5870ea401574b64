"""The sampling eval's parts: setting names to request fields, the loop detector on hand-made answers, and
the summary's arithmetic."""

import pytest

from evals.sampling import SampledAnswer, loops, sampling_fields, summary


def test_setting_names_become_request_fields() -> None:
    assert sampling_fields("greedy", 7) == {"temperature": 0}
    assert sampling_fields("rp1.15", 7) == {"temperature": 0, "repetition_penalty": 1.15}
    assert sampling_fields("t0.7", 7) == {"temperature": 0.7, "top_p": 0.9, "seed": 7}
    with pytest.raises(ValueError, match="greedy, rp<penalty> or t<temperature>"):
        sampling_fields("beam4", 7)


def test_an_answer_loops_when_one_4_gram_comes_back_three_times() -> None:
    looping = "of the Standard Version of the Standard Version of the Standard Version of the"
    assert loops(looping)
    assert not loops("the Standard Version of the Standard Version")  # twice is not a loop
    assert not loops("Corvale makes pear cider and holds its festival at midsummer night.")
    assert loops("A B C D a b c d A B C D")  # case-insensitive
    assert not loops("A B C D. a b c d; A B C D")  # punctuation stays part of a word
    assert not loops("")


def test_summary_counts_accuracy_and_loops_per_mode_and_setting() -> None:
    def answer(qid: str, setting: str, right: float, looped: bool) -> SampledAnswer:
        return SampledAnswer("squad", qid, "lc", setting, "x", right, right / 2, looped, 10)

    rows = summary([answer("1", "greedy", 1.0, True), answer("2", "greedy", 0.0, True),
                    answer("1", "t0.7", 0.0, False), answer("2", "t0.7", 0.0, True)])  # fmt: skip
    greedy, warm = rows
    assert (greedy["setting"], greedy["answers"], greedy["substring"], greedy["loops"]) == (
        "greedy",
        2,
        50,
        100,
    )
    assert (warm["substring"], warm["loops"], warm["f1"]) == (0, 50, 0)
    assert greedy["f1"] == 25
