"""The `lcrag` field of a reply, made from the plan and the engine's own records of the request (its KV stats
and timings), never by re-parsing the response.

- JSON replies: the field is added to vLLM's response object as it is dumped.
- Server-sent events: the first event carries mode and citations, the last event before `[DONE]` carries
  prompt tokens, timings and KV stats. vLLM's events pass through otherwise; the field is spliced into an
  event's JSON text (each event is one JSON object), and one event is held back at a time so the last can
  be recognised.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import asdict, dataclass
from typing import Any

from compression import retention
from compression.spec import RETENTION_KEY, STATS_KEY
from rag.errors import RagError
from server.errors import ApiError
from server.pipeline.modes.common import retrieve_for
from server.pipeline.plan import ChatPlan
from server.retention import retention_report
from server.schemas import LcragOptions
from server.services import Services

log = logging.getLogger("lcrag.server")
DATA = "data: "
DONE = "data: [DONE]"
KV_STAT_NAMES = ("tokens_before", "tokens_after", "blocks_before", "blocks_after")
RESPONSE_ID = re.compile(r'"id"\s*:\s*"([^"]+)"')


@dataclass(frozen=True)
class Reply:
    """What a planned request adds to its response."""

    plan: ChatPlan
    options: LcragOptions
    services: Services | None
    started: float

    def head_fields(self) -> dict[str, Any]:
        prompt = self.plan.prompt
        if prompt is None:
            return {}
        fields: dict[str, Any] = {
            "mode": prompt.reported_mode,
            "collection": prompt.collection,
            "citations": [asdict(citation) for citation in prompt.citations],
        }
        if prompt.route is not None:  # auto mode: which path ran and why
            fields.update(asdict(prompt.route))
        return fields

    def tail_fields(self, response_id: str | None, first_token_at: float | None) -> dict[str, Any]:
        now, prompt = time.perf_counter(), self.plan.prompt
        fields: dict[str, Any] = {}
        if prompt is not None:
            fields["prompt_tokens"] = len(prompt.prompt.token_ids)
        fields["timings"] = {
            "retrieval_ms": round(prompt.retrieval_ms, 2) if prompt else 0.0,
            "ttft_ms": None if first_token_at is None else round((first_token_at - self.started) * 1000.0, 2),
            "total_ms": round((now - self.started) * 1000.0, 2),
            "engine": self._engine_times(response_id),
        }
        if self.plan.kv is not None:
            fields["kv"] = self._kv_fields(response_id)
        return fields

    def _engine_times(self, response_id: str | None) -> dict[str, float] | None:
        """The engine's own queue / prefill / decode milliseconds for this answer (vLLM's request stats):
        what the answer cost the engine, apart from other requests' work and HTTP (null if unknown)."""
        timings = self.services.engine_timings if self.services else None
        return timings.take(response_id) if timings is not None and response_id else None

    def _kv_fields(self, response_id: str | None) -> dict[str, Any]:
        """Policy and ratio asked for, with the engine's real counts (null when nothing was compacted,
        e.g. a request that ended in its prefill step; for a context cache, the context's counts)."""
        ledger = self.services.kv_stats if self.services else None
        stats = ledger.take(response_id) if ledger is not None and response_id else None
        counts = {name: (stats or {}).get(name) for name in KV_STAT_NAMES}
        kv = self.plan.kv
        assert kv is not None
        # "hit": answered from a resident compressed context; "built": compressed it for later questions
        cache = (stats or {}).get("cache") or "none"
        fields = {"policy": kv.policy, "ratio": kv.ratio, **counts, "cache": cache}
        if kv.retention and ledger is not None and response_id:
            fields["retention"] = self._retention(ledger.take_retention(response_id))
        return fields

    def _retention(self, encoded: str | None) -> dict[str, Any] | None:
        """The retention view of an lc answer (`server.retention`); None when nothing was compacted, or
        for a prompt that is not an lc prompt over a collection (only the kept fraction then)."""
        if encoded is None or self.services is None:
            return None
        fractions = retention.decode(encoded)
        prompt, services = self.plan.prompt, self.services
        if prompt is None or prompt.mode != "lc":
            return {"tokens": len(fractions), "kept": round(sum(fractions) / len(fractions), 4)}
        try:  # the passages rag mode would cite, to warn when the eviction lost one
            retrieved = retrieve_for(services, self.options, prompt.collection, prompt.question)
        except (RagError, ApiError) as error:  # the collection changed meanwhile, say
            log.warning("retention view without retrieved passages: %s", error)
            retrieved = []
        return retention_report(services.tokenizer, prompt.prompt, prompt.documents, fractions, retrieved)

    def json(self, payload: dict[str, Any]) -> dict[str, Any]:
        """A JSON response (vLLM's, dumped) with the `lcrag` field; the engine-to-server channel removed."""
        if set(payload.get("kv_transfer_params") or {}) <= {STATS_KEY, RETENTION_KEY}:
            payload.pop("kv_transfer_params", None)
        payload["lcrag"] = {**self.head_fields(), **self.tail_fields(payload.get("id"), None)}
        return payload

    async def stream(self, events: AsyncIterator[str]) -> AsyncGenerator[str, None]:
        """vLLM's server-sent events with the `lcrag` field in the first and in the last event."""
        held: str | None = None
        head: dict[str, Any] | None = self.head_fields() or None
        response_id: str | None = None
        first_at: float | None = None
        async for event in events:
            if event.startswith(DONE):
                if held is not None:
                    yield with_field(held, self.tail_fields(response_id, first_at))
                    held = None
                yield event
                continue
            if not event.startswith(DATA):
                yield event
                continue
            if first_at is None:
                first_at = time.perf_counter()
                found = RESPONSE_ID.search(event, 0, 200)
                response_id = found.group(1) if found else None
                if head is not None:
                    event, head = with_field(event, head), None
            if held is not None:
                yield held
            held = event
        if held is not None:  # a stream cut short: what it has, with the tail
            yield with_field(held, self.tail_fields(response_id, first_at))


def with_field(event: str, fields: dict[str, Any]) -> str:
    """A `data: {...}` event with `fields` merged into its `lcrag` object (added as its first key when it has
    none: the event's JSON is only parsed when both the head and the tail land in the same event)."""
    body = event[len(DATA) :].rstrip("\n")
    if not body.startswith("{"):
        return event
    if '"lcrag"' in body:
        payload = json.loads(body)
        payload["lcrag"] = {**payload.get("lcrag", {}), **fields}
        return f"{DATA}{json.dumps(payload)}\n\n"
    rest = body[1:].lstrip()
    separator = "" if rest.startswith("}") else ", "
    return f'{DATA}{{"lcrag": {json.dumps(fields)}{separator}{rest}\n\n'
