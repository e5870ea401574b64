"""`lcrag ask` and `lcrag collections`: clients of a running lcrag server's HTTP API.

`ask --mode both` streams the RAG and LC answers at once, side by side, each with its citations and
timings when it finishes.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from lcrag.client import LcragClient, delta_text

MODES = ("rag", "lc")


@dataclass
class Answer:
    """One mode's streamed answer and the `lcrag` metadata that comes with it."""

    mode: str
    text: str = ""
    citations: list[dict[str, Any]] = field(default_factory=list)
    timings: dict[str, Any] = field(default_factory=dict)
    prompt_tokens: int | None = None
    error: str | None = None
    done: bool = False

    def panel(self) -> Panel:
        body: list[Any] = [Text(self.error or self.text or "…", style="red" if self.error else "")]
        if self.done and not self.error:
            body.append(Text(self.footer(), style="dim"))
        return Panel(Group(*body), title=self.mode.upper(), title_align="left")

    def footer(self) -> str:
        lines = [f"[{c['number']}] {c['title']}{_page(c)} ({c['score']:.2f})" for c in self.citations]
        timing = _milliseconds(self.timings)
        engine = self.timings.get("engine")
        if isinstance(engine, dict):  # the engine's own split of the answer's time
            timing += f"; engine: {_milliseconds(engine)}"
        lines.append(f"prompt {self.prompt_tokens} tokens; {timing}")
        return "\n".join(lines)


def _milliseconds(timings: dict[str, Any]) -> str:
    """`{"ttft_ms": 85.2, ...}` as "ttft 85 ms, ..." (numbers only)."""
    return ", ".join(
        f"{key.removesuffix('_ms')} {value:.0f} ms"
        for key, value in timings.items()
        if isinstance(value, int | float)
    )


def _page(citation: dict[str, Any]) -> str:
    return f" p.{citation['page']}" if citation.get("page") else ""


def stream_answer(
    client: LcragClient, model: str, collection: str, question: str, answer: Answer, max_tokens: int
) -> None:
    body = {
        "model": model,
        "messages": [{"role": "user", "content": question}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream_options": {"include_usage": True},
        "lcrag": {"collection": collection, "mode": answer.mode},
    }
    try:
        for chunk in client.chat_events(body):
            extra = chunk.get("lcrag") or {}
            answer.citations = extra.get("citations", answer.citations)
            answer.timings = extra.get("timings", answer.timings)
            answer.prompt_tokens = extra.get("prompt_tokens", answer.prompt_tokens)
            answer.text += delta_text(chunk)
    except Exception as error:  # shown in the panel: one failing mode must not hide the other
        answer.error = getattr(error, "message", None) or str(error)
    answer.done = True


def ask(
    base_url: str, api_key: str | None, question: str, collection: str, mode: str, max_tokens: int
) -> bool:
    """Stream the answer(s) to the terminal; returns whether every mode answered."""
    client = LcragClient(base_url, api_key)
    model = client.served_model()
    answers = [Answer(m) for m in (MODES if mode == "both" else (mode,))]
    workers = [
        threading.Thread(
            target=stream_answer, args=(client, model, collection, question, a, max_tokens), daemon=True
        )
        for a in answers
    ]
    for worker in workers:
        worker.start()
    with Live(_layout(answers), refresh_per_second=8, console=Console()) as live:
        while any(worker.is_alive() for worker in workers):
            live.update(_layout(answers))
            for worker in workers:
                worker.join(timeout=0.1)
        live.update(_layout(answers))
    return all(a.error is None for a in answers)


def _layout(answers: list[Answer]) -> Table:
    grid = Table.grid(expand=True, padding=(0, 1))
    for _ in answers:
        grid.add_column(ratio=1)
    grid.add_row(*(a.panel() for a in answers))
    return grid


def print_collections(base_url: str, api_key: str | None) -> None:
    client = LcragClient(base_url, api_key, timeout=60)
    resident = client.kv_caches()
    table = Table("collection", "documents", "chunks", "tokens", "fits lc", "compressed caches")
    for info in client.collections():
        fits = f"yes ({info['lc_prompt_tokens']}/{info['lc_available_tokens']})" if info["fits_lc"] else "no"
        mine = [cache_summary(cache) for cache in resident if info["name"] in cache["labels"]]
        row = [str(info["documents"]), str(info["chunks"]), str(info["tokens"]), fits, ", ".join(mine) or "-"]
        table.add_row(info["name"], *row)
    Console().print(table)


def cache_summary(cache: dict[str, Any]) -> str:
    """`kvzip-0.875 (5100->640 tokens, 28.1 MiB, 3 hits)` for one compressed context cache."""
    policy = json.loads(cache["policy"]).get("policy", "?")
    return (
        f"{policy}-{cache['ratio']:g} ({cache['tokens_before']}->{cache['tokens_after']} tokens, "
        f"{cache['bytes'] / 2**20:.1f} MiB, {cache['hits']} hits)"
    )
