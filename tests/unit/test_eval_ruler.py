"""The ruler suite's pieces: its configurations, the request each one sends, and the summary's task-weighted
average with a stratified interval."""

from __future__ import annotations

from evals.api import Reply
from evals.lc_suite import Probe, ProbeAnswer, chat_body, configurations, parse_config, probe_answer
from evals.ruler import markdown, summary
from evals.ruler_tasks import Sample


def test_query_agnostic_policies_also_run_with_the_question_outside() -> None:
    configs = configurations(["snapkv", "kvzip"], [0.5, 0.875], agnostic={"kvzip", "knorm"})
    assert configs == ["none", "snapkv:0.5", "snapkv:0.875", "kvzip:0.5", "kvzip:0.875",
                       "cache:kvzip:0.5", "cache:kvzip:0.875"]  # fmt: skip
    assert parse_config("cache:expected_attention:0.75") == ("expected_attention", 0.75, True)
    assert parse_config("snapkv:0.5") == ("snapkv", 0.5, False)
    assert parse_config("none") == (None, 0.0, False)


def test_each_configuration_sends_its_eviction_in_lc_mode() -> None:
    inside = chat_body("kvzip:0.5", "docs", "Q?", "m", 8)["lcrag"]
    assert inside == {
        "collection": "docs",
        "mode": "lc",
        "kv": {"policy": "kvzip", "ratio": 0.5, "cache": False},
    }
    assert chat_body("cache:knorm:0.25", "docs", "Q?", "m", 8)["lcrag"]["kv"]["cache"] is True
    assert "kv" not in chat_body("none", "docs", "Q?", "m", 8)["lcrag"]
    with_options = chat_body("cache:kvzip[chunk=8,layers=shared,vote_from=0.5]:0.875", "d", "Q?", "m", 8)
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
    failed = probe_answer("snapkv:0.5", "m", Probe(sample), Reply("1234567", {}, None, 1.0, error="boom"))
    assert failed.score == 0.0 and failed.error == "boom"
    right = probe_answer(
        "snapkv:0.5",
        "m",
        Probe(sample),
        Reply("It is 1234567.", {"kv": {"tokens_before": 9, "tokens_after": 4}}, 5.0, 9.0),
    )
    assert right.score == 1.0 and right.kv_tokens_after == 4
