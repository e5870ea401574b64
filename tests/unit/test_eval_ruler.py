"""The ruler suite's pieces: its configurations, the request each one sends, and the summary's task-weighted
average with a stratified interval."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pytest

from compression.spec import KVSpec, normal_config, parse_config
from evals.api import AnswerCache, Reply
from evals.common import respelled
from evals.lc_suite import Probe, ProbeAnswer, chat_body, configurations, probe_answer
from evals.ruler import markdown, summary
from evals.ruler_tasks import Sample


def test_query_agnostic_policies_also_run_with_the_question_outside() -> None:
    configs = configurations(["snapkv", "kvzip"], [0.5, 0.875], agnostic={"kvzip", "knorm"})
    assert configs == ["none", "snapkv-0.5", "snapkv-0.875", "kvzip-0.5", "kvzip-0.875",
                       "cache:kvzip-0.5", "cache:kvzip-0.875"]  # fmt: skip
    assert parse_config("cache:expected_attention-0.75") == (KVSpec.parse("expected_attention-0.75"), True)
    assert parse_config("snapkv-0.5") == (KVSpec(policy="snapkv", ratio=0.5), False)
    assert parse_config("none") == (None, False)


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("snapkv:0.5", "snapkv-0.5"),
        ("cache:kvzip:0.875", "cache:kvzip-0.875"),
        ("cache:expected_attention:0.50", "cache:expected_attention-0.5"),
        ("cache:kvzip[layers=shared,chunk=8]:0.875", "cache:kvzip[chunk=8,layers=shared]-0.875"),
        ("none", "none"),
    ],
)
def test_the_old_colon_spelling_is_still_read_and_written_with_the_dash(old: str, new: str) -> None:
    assert normal_config(old) == new and normal_config(new) == new
    assert parse_config(old) == parse_config(new)
    assert chat_body(old, "docs", "Q?", "m", 8) == chat_body(new, "docs", "Q?", "m", 8)


@pytest.mark.parametrize(
    ("config", "phrase"),
    [
        ("snapkv", "e.g. 'snapkv-0.75'"),
        ("cache:snapkv-0.5", "needs a query-agnostic policy"),
        ("cache:kvzip[chunk]-0.5", "options in brackets"),
        ("nope-0.5", "Unknown KV policy 'nope'"),
    ],
)
def test_a_bad_configuration_says_what_to_write(config: str, phrase: str) -> None:
    with pytest.raises(ValueError, match=phrase):
        parse_config(config)


def test_answers_stored_under_the_old_spelling_key_as_the_same_configuration(tmp_path: Path) -> None:
    path = tmp_path / "ruler.answers.jsonl"
    old = ProbeAnswer("cache:kvzip:0.5", "m", "vt", 400, 0, "a", ["a"], 1.0)
    other = ProbeAnswer("cache:kvzip:0.75", "m", "vt", 400, 0, "b", ["a"], 0.0)
    gone = ProbeAnswer("gone:0.5", "m", "vt", 400, 0, "c", ["a"], 0.0)  # no longer parses: kept as written
    path.write_text("".join(json.dumps(asdict(answer)) + "\n" for answer in (old, other, gone)))
    answers = AnswerCache(path, respelled(ProbeAnswer), lambda answer: answer.key)
    assert set(answers.answers) == {
        "cache:kvzip-0.5|m|vt|400|None|0", "cache:kvzip-0.75|m|vt|400|None|0", "gone:0.5|m|vt|400|None|0"
    }  # fmt: skip
    assert answers.answers["cache:kvzip-0.5|m|vt|400|None|0"].answer == "a"  # not 0.75's, not asked anew
    assert answers.answers["cache:kvzip-0.75|m|vt|400|None|0"].answer == "b"


def test_each_configuration_sends_its_eviction_in_lc_mode() -> None:
    inside = chat_body("kvzip-0.5", "docs", "Q?", "m", 8)["lcrag"]
    assert inside == {
        "collection": "docs",
        "mode": "lc",
        "kv": {"policy": "kvzip", "ratio": 0.5, "cache": False},
    }
    assert chat_body("cache:knorm-0.25", "docs", "Q?", "m", 8)["lcrag"]["kv"]["cache"] is True
    assert "kv" not in chat_body("none", "docs", "Q?", "m", 8)["lcrag"]
    with_options = chat_body("cache:kvzip[chunk=8,layers=shared,vote_from=0.5]-0.875", "d", "Q?", "m", 8)
    assert with_options["lcrag"]["kv"] == {
        "policy": "kvzip", "ratio": 0.875, "cache": True,
        "options": {"chunk": 8, "layers": "shared", "vote_from": 0.5},
    }  # fmt: skip


def test_the_average_weighs_every_task_the_same() -> None:
    def answer(task: str, seed: int, value: float) -> ProbeAnswer:
        return ProbeAnswer("none", "m", task, 4000, seed, "", [], value)

    answers = [answer("vt", 0, 1.0), answer("vt", 1, 1.0), answer("vt", 2, 1.0), answer("cwe", 0, 0.0)]
    (row,) = summary(answers, ["vt", "cwe"])
    assert row["average"] == 50.0 and row["tasks"] == {"vt": 100.0, "cwe": 0.0}
    assert row["ci"] == (50.0, 50.0)  # each task resampled within itself: no spread here
    assert "| none | 4000 | 4 | 50.0 [50.0, 50.0] | 100 | 0 |" in markdown([row], ["vt", "cwe"])


def test_a_failed_request_scores_zero_and_keeps_its_error() -> None:
    sample = Sample("niah_single_1", 4000, 0, "ctx", "q", ("1234567",))
    failed = probe_answer("snapkv-0.5", "m", Probe(sample), Reply("1234567", {}, None, 1.0, error="boom"))
    assert failed.score == 0.0 and failed.error == "boom"
    right = probe_answer(
        "snapkv-0.5",
        "m",
        Probe(sample),
        Reply("It is 1234567.", {"kv": {"tokens_before": 9, "tokens_after": 4}}, 5.0, 9.0),
    )
    assert right.score == 1.0 and right.kv_tokens_after == 4
