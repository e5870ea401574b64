"""The engine's per-request figures, read from vLLM's request stats as the outputs pass the API server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

from vllm.v1.metrics.stats import RequestStateStats

from compression.vllm_integration.outputs import ByRequest, EngineTimings, engine_times, watch_outputs


def stats(queued: float, scheduled: float, first: float, last: float) -> RequestStateStats:
    return RequestStateStats(
        queued_ts=queued, scheduled_ts=scheduled, first_token_ts=first, last_token_ts=last
    )


def output(request_id: str, finished: bool, metrics: RequestStateStats | None) -> SimpleNamespace:
    return SimpleNamespace(request_id=request_id, finished=finished, metrics=metrics)


def test_the_three_intervals_are_milliseconds_between_the_engine_timestamps() -> None:
    times = engine_times(stats(queued=100.0, scheduled=100.25, first=101.5, last=103.0))
    assert times == {"queue_ms": 250.0, "prefill_ms": 1250.0, "decode_ms": 1500.0}


def test_a_request_never_scheduled_or_without_stats_has_no_times() -> None:
    assert engine_times(None) is None
    assert engine_times(stats(queued=5.0, scheduled=0.0, first=0.0, last=0.0)) is None
    assert engine_times(stats(queued=0.0, scheduled=5.0, first=6.0, last=7.0)) is None  # no QUEUED event


def test_only_finished_outputs_are_recorded_and_each_is_taken_once() -> None:
    timings = EngineTimings()
    timings.record(output("chatcmpl-a", finished=False, metrics=stats(1.0, 2.0, 3.0, 3.0)))
    assert timings.take("chatcmpl-a") is None
    timings.record(output("chatcmpl-a", finished=True, metrics=stats(1.0, 2.0, 3.0, 4.0)))
    timings.record(output("cmpl-b-0", finished=True, metrics=stats(1.0, 1.0, 1.5, 1.5)))
    assert timings.take("chatcmpl-a") == {"queue_ms": 1000.0, "prefill_ms": 1000.0, "decode_ms": 1000.0}
    assert timings.take("chatcmpl-a") is None
    assert timings.take("cmpl-b") == {
        "queue_ms": 0.0,
        "prefill_ms": 500.0,
        "decode_ms": 0.0,
    }  # its `-0` prompt


def test_the_ledger_keeps_only_the_newest_entries() -> None:
    ledger = ByRequest(capacity=2)
    for name in ("a", "b", "c"):
        ledger.put(name, name.upper())
    assert [ledger.take(name) for name in ("a", "b", "c")] == [None, "B", "C"]


def test_watching_sees_every_output_and_passes_it_on_unchanged() -> None:
    class Client:
        async def generate(self, *args: Any, **kwargs: Any) -> AsyncIterator[str]:
            for item in (*args, kwargs["last"]):
                yield item

    client, seen = Client(), []
    watch_outputs(client, seen.append)

    async def consume() -> list[str]:
        return [item async for item in client.generate("x", "y", last="z")]

    assert asyncio.run(consume()) == ["x", "y", "z"] == seen
