"""The position suite's probes and summary: the gold paragraph where the position says, the same
distractors (from other articles) at every position, and the per-position accuracy and gap worked by hand."""

from __future__ import annotations

from evals.position import Answer, markdown, probes, summary


def words(text: str) -> int:
    return len(text.split())


def test_each_question_has_the_same_distractors_at_every_gold_position() -> None:
    work = probes(3, 5, [0, 2, 4], 120, words, seed=1)
    assert len(work) == 9 and work == probes(3, 5, [0, 2, 4], 120, words, seed=1)
    for first in range(0, 9, 3):
        group = work[first : first + 3]
        (gold,) = group[0].item.paragraphs
        article = gold.title.rsplit(" (", 1)[0]
        for probe in group:
            assert len(probe.documents) == 5 and probe.documents[probe.position] == gold
            others = [p for p in probe.documents if p != gold]
            assert others == [p for p in group[0].documents if p != gold]
            assert all(not p.title.startswith(article) and words(p.text) <= 120 for p in others)


def test_accuracy_per_position_and_the_gap() -> None:
    def answer(question: str, position: int, value: float) -> Answer:
        return Answer("none", "m", question, position, 3, "", [], value)

    answers = [answer("q1", 0, 1.0), answer("q2", 0, 1.0), answer("q1", 2, 0.0), answer("q2", 2, 1.0)]
    (row,) = summary(answers)
    assert row["positions"][0]["accuracy"] == 100.0 and row["positions"][2]["accuracy"] == 50.0
    assert row["gap"] == 50.0 and row["average"] == 75.0 and row["questions"] == 2
    assert "| m | none | 2 | 100 [100, 100] | 50 [0, 100] | 75.0 | 50.0 |" in markdown([row])
