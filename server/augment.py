"""Add lcrag's `lcrag` field to vLLM's chat responses, as an ASGI `send` wrapper.

- JSON responses: the body is collected, `lcrag` added, Content-Length corrected.
- Server-sent event streams: the first event carries mode and citations, the last event before
  `[DONE]` carries prompt tokens and timings. Events pass through as they arrive otherwise (one is held
  back at a time, so the last can be recognised).
Error responses pass through untouched.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from typing import Any

from starlette.types import Message, Send

from server.modes import PreparedPrompt

EVENT_END = b"\n\n"
DONE = b"data: [DONE]"


def head_fields(prepared: PreparedPrompt) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "mode": prepared.mode,
        "collection": prepared.collection,
        "citations": [asdict(citation) for citation in prepared.citations],
    }
    if prepared.route is not None:  # auto mode: which path ran and why
        fields.update(asdict(prepared.route))
    return fields


def tail_fields(prepared: PreparedPrompt, started: float, first_token_at: float | None) -> dict[str, Any]:
    now = time.perf_counter()
    return {
        "prompt_tokens": prepared.prompt_tokens,
        "timings": {
            "retrieval_ms": round(prepared.retrieval_ms, 2),
            "ttft_ms": None if first_token_at is None else round((first_token_at - started) * 1000.0, 2),
            "total_ms": round((now - started) * 1000.0, 2),
        },
    }


def augmenting_send(send: Send, prepared: PreparedPrompt, started: float, stream: bool) -> Send:
    return (_StreamAugmenter if stream else _JsonAugmenter)(send, prepared, started).send


class _JsonAugmenter:
    def __init__(self, send: Send, prepared: PreparedPrompt, started: float) -> None:
        self.downstream, self.prepared, self.started = send, prepared, started
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
            payload["lcrag"] = {
                **head_fields(self.prepared),
                **tail_fields(self.prepared, self.started, None),
            }
            body = json.dumps(payload).encode()
        headers = [(k, v) for k, v in self.start["headers"] if k.lower() != b"content-length"]
        headers.append((b"content-length", str(len(body)).encode()))
        await self.downstream({**self.start, "headers": headers})
        await self.downstream({"type": "http.response.body", "body": body, "more_body": False})


class _StreamAugmenter:
    def __init__(self, send: Send, prepared: PreparedPrompt, started: float) -> None:
        self.downstream, self.prepared, self.started = send, prepared, started
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
            payload["lcrag"] = head_fields(self.prepared)
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
                **tail_fields(self.prepared, self.started, self.first_token_at),
            }
        return b"data: " + json.dumps(payload).encode() + EVENT_END
