"""A column's answer as its stream's events arrive: text, costs, citations, and the ways a stream can fail."""

import time
from collections.abc import Iterator

import pytest

from tests.unit.test_ui_views import RESULT
from ui import views
from ui.answers import ANSWERING, ColumnAnswer, ColumnAsk, Question, merged_events

EARLIER = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}]


def absorbed(*events: dict) -> ColumnAnswer:
    answer = ColumnAnswer.open(EARLIER, "How many arches?")
    for event in events:
        answer.absorb(event)
    return answer


def test_deltas_stream_into_the_last_turn_and_the_result_fills_costs_and_citations() -> None:
    answer = absorbed({"type": "delta", "content": "Seven "})
    chat, metrics, citations, result = answer.outputs()
    assert chat[:2] == EARLIER and chat[2] == {"role": "user", "content": "How many arches?"}
    assert chat[3]["content"] == "Seven " and metrics == ANSWERING and citations == ""
    assert result == {"__type__": "update"}  # the result is left alone until it comes
    answer = absorbed(
        {"type": "delta", "content": "Seven "},
        {"type": "delta", "content": "arches."},
        {"type": "result", "result": RESULT},
        {"type": "end"},
    )
    chat, metrics, citations, result = answer.outputs()
    assert chat[3]["content"] == "Seven arches." and result is RESULT
    assert metrics == views.metrics_markdown(RESULT) and citations == views.citations_html(RESULT)
    assert len(EARLIER) == 2  # the earlier chat is copied, not appended to


def test_an_error_result_replaces_the_text_with_its_message() -> None:
    error = {"message": "LC needs 900 prompt tokens but only 496 are available", "type": "x", "code": 400}
    failed = {**RESULT, "mode": "lc", "error": error}
    chat, metrics, citations, result = absorbed({"type": "result", "result": failed}).outputs()
    assert chat[-1]["content"] == views.error_note(error["message"])
    assert metrics == "**lc** failed (400)" and citations == "" and result is failed


def test_a_blank_answer_says_so() -> None:
    chat, *_ = absorbed({"type": "delta", "content": "  "}, {"type": "result", "result": RESULT}).outputs()
    assert chat[-1]["content"] == views.BLANK_ANSWER


def test_a_failed_stream_or_one_that_ends_without_a_result_is_a_readable_line() -> None:
    chat, metrics, citations, result = absorbed(
        {"type": "delta", "content": "Sev"}, {"type": "failure", "message": "The server did not answer"}
    ).outputs()
    assert chat[-1]["content"] == views.error_note("The server did not answer")
    assert (metrics, citations, result) == ("", "", None)
    chat, *_ = absorbed({"type": "delta", "content": "Sev"}, {"type": "end"}).outputs()
    assert chat[-1]["content"] == views.error_note("The server ended the answer without a result.")


class SlowClient:
    """Streams two deltas and a result per mode, a little apart."""

    def compare_stream(
        self, question: str, collection: str, modes: list[str], *rest: object
    ) -> Iterator[dict]:
        (mode,) = modes
        for word in ("one ", "two"):
            time.sleep(0.1)
            yield {"type": "delta", "content": word}
        yield {"type": "result", "result": {"mode": mode, "answer": "one two"}}


@pytest.mark.parametrize("one_at_a_time", [True, False])
def test_columns_stream_at_once_or_one_after_another(one_at_a_time: bool) -> None:
    client = SlowClient()
    asks = [ColumnAsk("a", "rag", []), ColumnAsk("b", "lc", [])]
    question = Question("Q?", "docs", None, 16)
    keys = [key for key, _ in merged_events(client, question, asks, one_at_a_time)]  # type: ignore[arg-type]
    assert sorted(keys) == ["a"] * 4 + ["b"] * 4  # 2 deltas, a result and an end each
    in_turn = keys == ["a"] * 4 + ["b"] * 4
    assert in_turn is one_at_a_time  # in turn: b starts only after a's stream ended
