"""What the API server learns from the engine's outputs that vLLM's OpenAI responses leave out, read where
the outputs pass: `watch_outputs` wraps the engine client's `generate` (`AsyncLLM.generate`, an async
generator of `RequestOutput`) so every output of every endpoint, streamed or not, is seen once.

`EngineTimings` keeps each finished request's own figures from vLLM's request stats (`RequestOutput.metrics`,
a `vllm.v1.metrics.stats.RequestStateStats`: the engine core's QUEUED / SCHEDULED / first and last token
timestamps, the intervals vLLM's Prometheus histograms are made of): time queued, in prefill, in decode.
Unlike a client's wall-clock TTFT, these split waiting for the engine from working, request by request.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from typing import Any

TAKEN_KEYS = ("", "-0")  # a completion's single prompt runs as `<response id>-0` in the engine


def watch_outputs(engine_client: Any, record: Callable[[Any], None]) -> None:
    """Call `record(output)` for every `RequestOutput` that `engine_client.generate` yields from now on."""
    generate: Callable[..., AsyncIterator[Any]] = engine_client.generate

    async def generate_and_record(*args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        async for output in generate(*args, **kwargs):
            record(output)
            yield output

    engine_client.generate = generate_and_record


class ByRequest:
    """Values by request id until taken by the response's id; bounded (oldest dropped), thread-safe."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._values: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.Lock()

    def put(self, request_id: str, value: Any) -> None:
        with self._lock:
            self._values[request_id] = value
            while len(self._values) > self.capacity:
                self._values.popitem(last=False)

    def take(self, response_id: str) -> Any:
        """The value of the response `response_id` (or of its one choice, `<id>-0`), removed; else None."""
        with self._lock:
            for suffix in TAKEN_KEYS:
                if response_id + suffix in self._values:
                    return self._values.pop(response_id + suffix)
        return None


def engine_times(stats: Any) -> dict[str, float] | None:
    """A finished request's `RequestStateStats` as milliseconds queued (arrival in the scheduler's waiting
    queue to first scheduled), in prefill (first scheduled to first token; a preemption's recompute counts
    here) and in decode (first to last token); None without stats (`--disable-log-stats`)."""
    if stats is None or not (stats.queued_ts and stats.scheduled_ts and stats.first_token_ts):
        return None  # never scheduled, or an engine that sent no QUEUED / SCHEDULED events

    def ms(start: float, end: float) -> float:
        return round(max(0.0, end - start) * 1000.0, 2)

    return {
        "queue_ms": ms(stats.queued_ts, stats.scheduled_ts),
        "prefill_ms": ms(stats.scheduled_ts, stats.first_token_ts),
        "decode_ms": ms(stats.first_token_ts, stats.last_token_ts),
    }


class EngineTimings:
    """The engine's queue / prefill / decode milliseconds of finished requests, by request id, until taken."""

    def __init__(self, capacity: int = 10_000) -> None:
        self._times = ByRequest(capacity)

    def watch(self, engine_client: Any) -> None:
        watch_outputs(engine_client, self.record)

    def record(self, output: Any) -> None:
        if not getattr(output, "finished", False):
            return
        times = engine_times(getattr(output, "metrics", None))
        if times is not None:
            self._times.put(output.request_id, times)

    def take(self, response_id: str) -> dict[str, float] | None:
        return self._times.take(response_id)
