"""Add lcrag's `lcrag` field to vLLM's chat and completion responses, as an ASGI `send` wrapper.

- JSON responses: the body is collected, `lcrag` added, Content-Length corrected.
- Server-sent event streams: the first event carries mode and citations, the last event before
  `[DONE]` carries prompt tokens, timings and KV stats. Events pass through as they arrive otherwise (one
  is held back at a time, so the last can be recognised).
Error responses pass through untouched.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass
from typing import Any

from starlette.types import Message, Send

from compression import retention
from compression.spec import RETENTION_KEY, STATS_KEY, KVSpec
from rag.errors import RagError
from server.errors import ApiError
from server.modes import PreparedPrompt, retrieve_for
from server.retention import retention_report
from server.schemas import LcragOptions
from server.services import Services

log = logging.getLogger("lcrag.server")
EVENT_END = b"\n\n"
DONE = b"data: [DONE]"
KV_STAT_NAMES = ("tokens_before", "tokens_after", "blocks_before", "blocks_after")


@dataclass(frozen=True)
class ResponseExtras:
    """What a request adds to its response: a collection's prompt and/or KV eviction."""

    prepared: PreparedPrompt | None
    kv: KVSpec | None
    started: float
    services: Services | None
    options: LcragOptions | None = None

    def head_fields(self) -> dict[str, Any]:
        if self.prepared is None:
            return {}
        fields: dict[str, Any] = {
            "mode": self.prepared.mode,
            "collection": self.prepared.collection,
            "citations": [asdict(citation) for citation in self.prepared.citations],
        }
        if self.prepared.route is not None:  # auto mode: which path ran and why
            fields.update(asdict(self.prepared.route))
        return fields

    def tail_fields(self, response_id: str | None, first_token_at: float | None) -> dict[str, Any]:
        now = time.perf_counter()
        fields: dict[str, Any] = {}
        if self.prepared is not None:
            fields["prompt_tokens"] = self.prepared.prompt_tokens
        fields["timings"] = {
            "retrieval_ms": round(self.prepared.retrieval_ms, 2) if self.prepared else 0.0,
            "ttft_ms": None if first_token_at is None else round((first_token_at - self.started) * 1000.0, 2),
            "total_ms": round((now - self.started) * 1000.0, 2),
            "engine": self._engine_times(response_id),
        }
        if self.kv is not None:
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
        assert self.kv is not None
        # "hit": answered from a resident compressed context; "built": compressed it for later questions
        cache = (stats or {}).get("cache") or "none"
        fields = {"policy": self.kv.policy, "ratio": self.kv.ratio, **counts, "cache": cache}
        if self.kv.retention and ledger is not None and response_id:
            fields["retention"] = self._retention(ledger.take_retention(response_id))
        return fields

    def _retention(self, encoded: str | None) -> dict[str, Any] | None:
        """The retention view of an lc answer (`server.retention`); None when nothing was compacted, or
        for a prompt that is not an lc prompt over a collection (only the kept fraction then)."""
        if encoded is None or self.services is None:
            return None
        fractions = retention.decode(encoded)
        prepared, services = self.prepared, self.services
        if prepared is None or prepared.mode != "lc":
            return {"tokens": len(fractions), "kept": round(sum(fractions) / len(fractions), 4)}
        try:  # the passages rag mode would cite, to warn when the eviction lost one
            options = self.options or LcragOptions()
            retrieved = retrieve_for(services, options, prepared.collection, prepared.question)
        except (RagError, ApiError) as error:  # the collection changed meanwhile, say
            log.warning("retention view without retrieved passages: %s", error)
            retrieved = []
        tokenizer = services.tokenizer
        return retention_report(tokenizer, prepared.messages, prepared.documents, fractions, retrieved)


def augmenting_send(send: Send, extras: ResponseExtras, stream: bool) -> Send:
    return (_StreamAugmenter if stream else _JsonAugmenter)(send, extras).send


class _JsonAugmenter:
    def __init__(self, send: Send, extras: ResponseExtras) -> None:
        self.downstream, self.extras = send, extras
        self.start: Message | None = None
        self.body = bytearray()

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.start = message
            return
        if message["type"] != "http.response.body" or self.start is None:
            await self.downstream(message)
            return
        self.body += message.get("body", b"")
        if message.get("more_body", False):
            return
        body = bytes(self.body)
        if self.start["status"] == 200:
            payload = json.loads(body)
            if set(payload.get("kv_transfer_params") or {}) <= {STATS_KEY, RETENTION_KEY}:
                del payload["kv_transfer_params"]  # our engine-to-server channel, reported below
            payload["lcrag"] = {
                **self.extras.head_fields(),
                **self.extras.tail_fields(payload.get("id"), None),
            }
            body = json.dumps(payload).encode()
        headers = [(k, v) for k, v in self.start["headers"] if k.lower() != b"content-length"]
        headers.append((b"content-length", str(len(body)).encode()))
        await self.downstream({**self.start, "headers": headers})
        await self.downstream({"type": "http.response.body", "body": body, "more_body": False})


class _StreamAugmenter:
    def __init__(self, send: Send, extras: ResponseExtras) -> None:
        self.downstream, self.extras = send, extras
        self.ok = False
        self.pending = b""
        self.held: dict[str, Any] | None = None
        self.sent_head = False
        self.first_token_at: float | None = None

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.ok = message["status"] == 200
            await self.downstream(message)
            return
        if message["type"] != "http.response.body" or not self.ok:
            await self.downstream(message)
            return
        self.pending += message.get("body", b"")
        *events, self.pending = self.pending.split(EVENT_END)
        out = b"".join([self._event(event) for event in events if event.strip()])
        if not message.get("more_body", False):
            out += self._flush_held(final=True) + self.pending
        if out or not message.get("more_body", False):
            await self.downstream(
                {"type": "http.response.body", "body": out, "more_body": message.get("more_body")}
            )

    def _event(self, event: bytes) -> bytes:
        if event.strip() == DONE:
            return self._flush_held(final=True) + event + EVENT_END
        if not event.startswith(b"data: "):
            return event + EVENT_END
        if self.first_token_at is None:
            self.first_token_at = time.perf_counter()
        payload = json.loads(event[len(b"data: ") :])
        if not self.sent_head:
            head = self.extras.head_fields()
            if head:
                payload["lcrag"] = head
            self.sent_head = True
        out = self._flush_held(final=False)
        self.held = payload
        return out

    def _flush_held(self, final: bool) -> bytes:
        if self.held is None:
            return b""
        payload, self.held = self.held, None
        if final:
            payload["lcrag"] = {
                **payload.get("lcrag", {}),
                **self.extras.tail_fields(payload.get("id"), self.first_token_at),
            }
        return b"data: " + json.dumps(payload).encode() + EVENT_END
