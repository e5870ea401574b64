"""Per-request eviction stats on the API-server side, and Prometheus counters for them.

The scheduler (in the engine-core process) attaches each compressed request's stats to its finished
output's `kv_transfer_params` (see scheduler.py). vLLM's OpenAI server copies that field only into
non-streamed chat responses, so `KVStatsLedger.watch` reads every output the engine client's `generate`
yields (`outputs.watch_outputs`) and records the stats by request id for every endpoint and for streams;
the HTTP layer then takes them by the response's id. What each compaction kept per position
(`compression.retention`) is kept too, for the last `RETENTIONS_KEPT` requests only (a byte per token).
"""

from __future__ import annotations

from typing import Any

from prometheus_client import Counter, Gauge

from compression.spec import RETENTION_KEY, STATS_KEY
from compression.vllm_integration.outputs import ByRequest, watch_outputs

EVICTED_TOKENS = Counter("lcrag_kv_evicted_tokens", "Prompt tokens whose K/V was evicted.")
FREED_BLOCKS = Counter("lcrag_kv_freed_blocks", "KV-cache blocks returned to vLLM's block pool by eviction.")
COMPRESSED_REQUESTS = Counter("lcrag_kv_compressed_requests", "Requests whose KV cache was compacted.")
CACHED_CONTEXTS = Gauge("lcrag_kv_cached_contexts", "Compressed context caches resident in the KV cache.")
CACHE_BLOCKS = Gauge("lcrag_kv_cache_blocks", "KV-cache blocks held by compressed context caches.")
RETENTIONS_KEPT = 64
CACHE_HITS = Counter("lcrag_kv_cache_hits", "Requests answered from a resident compressed context cache.")


def record_totals(totals: dict[str, Any]) -> None:
    """Set the context-cache gauges from the engine's counts (every compressed request's stats carry them,
    and so do the engine's cache listings)."""
    if "cached_contexts" in totals:
        CACHED_CONTEXTS.set(totals["cached_contexts"])
        CACHE_BLOCKS.set(totals["cache_blocks"])


class KVStatsLedger:
    """Stats of finished compressed requests by request id, until taken (bounded: oldest dropped)."""

    def __init__(self, capacity: int = 10_000) -> None:
        self._stats = ByRequest(capacity)
        self._retentions = ByRequest(RETENTIONS_KEPT)

    def watch(self, engine_client: Any) -> None:
        """Record the stats of every output `engine_client.generate` yields from now on."""
        watch_outputs(engine_client, self.record_output)

    def record_output(self, output: Any) -> None:
        params = getattr(output, "kv_transfer_params", None)
        if params and STATS_KEY in params:
            self.record(output.request_id, params[STATS_KEY], params.get(RETENTION_KEY))

    def record(self, request_id: str, stats: dict[str, Any], retention: str | None = None) -> None:
        if stats.get("cache") == "hit":  # the context was compressed by an earlier request
            CACHE_HITS.inc()
        else:
            EVICTED_TOKENS.inc(stats["tokens_before"] - stats["tokens_after"])
            FREED_BLOCKS.inc(stats["blocks_before"] - stats["blocks_after"])
            COMPRESSED_REQUESTS.inc()
        record_totals(stats)
        self._stats.put(request_id, stats)
        if retention is not None:
            self._retentions.put(request_id, retention)

    def take(self, response_id: str) -> dict[str, Any] | None:
        """The stats of the response `response_id` (a completion's single choice is `<id>-0` inside)."""
        return self._stats.take(response_id)

    def take_retention(self, response_id: str) -> str | None:
        """What the compaction of the response `response_id` kept (`compression.retention.encode`)."""
        return self._retentions.take(response_id)
