"""The retention view of a compressed LC answer: what the eviction kept of each document, as a bar of its
chunks and its text shaded by how much of each span's K/V survived (`server.retention` computes it; the
answer's `kv.retention`), with the server's warnings about evicted passages first."""

from __future__ import annotations

import html
from typing import Any

KEPT_COLOUR = "34, 139, 34"  # green, shaded by the kept fraction


def shade(kept: float | None) -> str:
    alpha = 0.08 + 0.82 * (kept or 0.0)
    return f"background: rgba({KEPT_COLOUR}, {alpha:.2f})"


def percent(value: float | None) -> str:
    return "?" if value is None else f"{value:.0%}"


def retention_html(view: dict[str, Any]) -> str:
    """The whole view: a summary line, warnings, the retrieved passages and one entry per document."""
    parts = [
        "<div class='retention'>",
        f"<p><b>What the eviction kept</b>: {percent(view['kept'])} of the K/V of {view['tokens']:,} prompt "
        "tokens (per token: the share of layers x KV heads still holding it; darker = more kept).</p>",
    ]
    parts += [f"<p class='retention-warning'>⚠ {html.escape(warning)}</p>" for warning in view["warnings"]]
    if view["retrieved"]:
        rows = "".join(
            f"<li{' class=evicted' if row['evicted'] else ''}>[{row['number']}] {html.escape(row['title'])}, "
            f"chunk {row['chunk_index']}: kept {percent(row['kept'])}</li>"
            for row in view["retrieved"]
        )
        parts.append(f"<p>Passages retrieval ranks highest for this question:</p><ul>{rows}</ul>")
    parts += [document_html(document, view["evicted_below"]) for document in view["documents"]]
    parts.append("</div>")
    return "".join(parts)


def document_html(document: dict[str, Any], evicted_below: float) -> str:
    """One document: its chunks as a bar (width by length), and its text shaded span by span."""
    cells = "".join(
        f"<span class='retention-chunk' style='flex: {max(1, chunk['end'] - chunk['start'])}; "
        f"{shade(chunk['kept'])}' title='chunk {chunk['chunk_index']}: kept {percent(chunk['kept'])}'></span>"
        for chunk in document["chunks"]
    )
    text = document["text"]
    spans = "".join(
        f"<span style='{shade(kept)}'"
        f"{' class=evicted' if kept < evicted_below else ''}>"
        f"{html.escape(text[int(start) : int(end)])}</span>"
        for start, end, kept in document["spans"]
    )
    summary = f"Document {document['number']}: {document['title']} · kept {percent(document['kept'])}"
    return (
        f"<details class='retention-document'><summary>{html.escape(summary)}</summary>"
        f"<div class='retention-bar' style='display: flex; height: 12px; gap: 1px'>{cells}</div>"
        f"<div class='retention-text' style='white-space: pre-wrap'>{spans}</div></details>"
    )
