"""VaL probes: within their budget, deterministic, the target at its depth, the question answerable only
from the target (its fragment, line or id occurs once), and scoring a right answer 100 and a wrong one 0."""

from __future__ import annotations

import re

import pytest

from evals.lc_suite import ProbeAnswer
from evals.val import markdown, summary
from evals.val_tasks import TASKS, generate


def count(text: str) -> int:
    return len(text) // 4


@pytest.mark.parametrize("task", list(TASKS))
@pytest.mark.parametrize("depth", [0.1, 0.5, 0.9])
def test_each_probe_hides_its_one_target_at_its_depth(task: str, depth: float) -> None:
    sample = generate(task, 2500, depth, 0, count)
    assert 2300 < count(f"{sample.context}\n\n{sample.question}") <= 2500
    assert sample == generate(task, 2500, depth, 0, count) != generate(task, 2500, depth, 1, count)
    (target,) = sample.answers
    body = sample.context.split("\n\n", 1)[1]
    assert abs(body.index(target) / len(body) - depth) < 0.05
    clue = re.search(r'"([^"]+)"|`([^`]+)`|id (\d+)', sample.question)
    assert clue is not None
    assert body.count(next(group for group in clue.groups() if group)) == 1  # only the target answers it
    assert sample.score(f"It is {target}") >= 0.9 and sample.score("No idea.") == 0.0


def test_the_summary_has_a_score_per_depth_bin_and_the_gap() -> None:
    answers = [
        ProbeAnswer("none", "m", "val_code", 2000, 0, "", [], s, float(b))
        for b, s in [(0, 1.0), (1, 0.0), (2, 1.0)]
    ]
    (row,) = summary(answers)
    assert row["bins"] == {0: 100.0, 1: 0.0, 2: 100.0} and row["gap"] == 100.0
    assert "| val_code | m | none | 2000 | 3 | 100 | 0 | 100 | 66.7 | 100.0 |" in markdown([row], 3)
