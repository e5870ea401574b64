"""Several answer columns at once: one `/v1/compare` stream per column, merged as their events arrive.

The page asks every column from one listener. Gradio's page runs the listeners of a click one after
another, each reading its inputs only when it starts, so separate listeners would answer one column at a
time and could read a question typed after the click. One listener reads the inputs once; here each
column streams in its own thread and the listener redraws the page after every event of any column.
With `one_at_a_time` (the page's default) one thread asks the columns in turn instead, so each column's
time to first token and latency are its own, not shared with the prefills of the others (the engine runs
concurrent requests in the same steps).
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import gradio as gr

from lcrag.client import ApiFailure, LcragClient
from ui import views

log = logging.getLogger("lcrag.ui")
ANSWERING = "*answering…*"
Event = dict[str, Any]


@dataclass(frozen=True)
class ColumnAsk:
    """What one column asks: its mode (`rag`, `lc`, `lc:snapkv-0.75`, ...) and its chat so far."""

    key: str
    mode: str
    chat: list[dict[str, Any]]


@dataclass
class ColumnAnswer:
    """One column's answer as it streams: its chat, costs line, citations and (once finished) result."""

    chat: list[dict[str, Any]]
    column: str = "a"
    metrics: str = ANSWERING
    citations: str = ""
    result: dict[str, Any] | None = None
    finished: bool = False

    @classmethod
    def open(cls, chat: Sequence[dict[str, Any]], question: str, column: str = "a") -> ColumnAnswer:
        turns = [*chat, {"role": "user", "content": question}, {"role": "assistant", "content": ""}]
        return cls(turns, column)

    def absorb(self, event: Event) -> None:
        """Take one event of this column's stream: `delta`, `result`, `failure` or `end`."""
        kind = event["type"]
        if kind == "delta":
            self.chat[-1]["content"] += event["content"]
        elif kind == "result":
            self._finish(event["result"])
        elif kind == "failure":
            self._fail(event["message"])
        elif kind == "end" and not self.finished:
            self._fail("The server ended the answer without a result.")

    def outputs(self) -> list[Any]:
        """Chat, metrics, citations and result, in `AnswerColumn.outputs` order."""
        return [self.chat, self.metrics, self.citations, self.result if self.finished else gr.skip()]

    def _finish(self, result: dict[str, Any]) -> None:
        if result.get("error"):
            self.chat[-1]["content"] = views.error_note(result["error"]["message"])
        elif not self.chat[-1]["content"].strip():
            self.chat[-1]["content"] = views.BLANK_ANSWER
        else:
            numbers = [citation["number"] for citation in result.get("citations") or []]
            self.chat[-1]["content"] = views.link_citations(self.chat[-1]["content"], self.column, numbers)
        self.metrics = views.metrics_markdown(result)
        self.citations = views.citations_html(result, self.column)
        self.result, self.finished = result, True

    def _fail(self, message: str) -> None:
        self.chat[-1]["content"] = views.error_note(message)
        self.metrics, self.citations, self.result, self.finished = "", "", None, True


@dataclass(frozen=True)
class Question:
    """The question and the settings every column shares."""

    text: str
    collection: str
    model: str | None
    max_tokens: int
    temperature: float = 0.0
    repetition_penalty: float | None = None
    top_k: int | None = None
    retrieval: str | None = None
    system_prompt: str | None = None

    def settings(self) -> dict[str, Any]:
        """The page's answer settings as `/v1/compare` fields (those left unset are not sent)."""
        chosen = {
            "temperature": self.temperature,
            "repetition_penalty": self.repetition_penalty,
            "top_k": self.top_k,
            "retrieval": self.retrieval,
            "system_prompt": self.system_prompt or None,
            "retention": True,  # compressed LC columns show what the eviction kept
        }
        return {key: value for key, value in chosen.items() if value is not None}


def merged_events(
    client: LcragClient, question: Question, asks: Sequence[ColumnAsk], one_at_a_time: bool = False
) -> Iterator[tuple[str, Event]]:
    """Every column's events as `(column key, event)` in arrival order, each stream closed by an `end` event;
    a stream that fails gives a `failure` event with a readable message first. The columns stream at once,
    or with `one_at_a_time` one after another in order. Closing the iterator stops reading the streams that
    are still open."""
    arrivals: queue.Queue[tuple[str, Event]] = queue.Queue()
    stop = threading.Event()

    def pump(ask: ColumnAsk) -> None:
        if stop.is_set():
            arrivals.put((ask.key, {"type": "end"}))
            return
        try:
            history = views.history_of(ask.chat)
            for event in client.compare_stream(
                question.text,
                question.collection,
                [ask.mode],
                question.model,
                question.max_tokens,
                history,
                question.settings(),
            ):
                if stop.is_set():
                    return
                arrivals.put((ask.key, event))
        except ApiFailure as error:
            arrivals.put((ask.key, {"type": "failure", "message": error.message}))
        except Exception as error:  # a column shows what went wrong; the other columns go on
            log.exception("ui: column %s (%s) failed", ask.key, ask.mode)
            arrivals.put((ask.key, {"type": "failure", "message": f"The answer could not be read: {error}"}))
        finally:
            arrivals.put((ask.key, {"type": "end"}))

    def pump_in_turn(group: Sequence[ColumnAsk]) -> None:
        for ask in group:
            pump(ask)

    groups = [list(asks)] if one_at_a_time else [[ask] for ask in asks]
    for group in groups:
        name = f"lcrag-ui-{'-'.join(ask.key for ask in group)}"
        threading.Thread(target=pump_in_turn, args=(group,), name=name, daemon=True).start()
    open_streams = len(asks)
    try:
        while open_streams:
            key, event = arrivals.get()
            if event["type"] == "end":
                open_streams -= 1
            yield key, event
    finally:
        stop.set()
