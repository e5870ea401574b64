"""What an eviction kept, per prompt position: the fraction of (layer, KV head) caches that still hold the
token's K/V after compaction (1 = every head of every layer kept it, 0 = evicted everywhere).

The engine counts it while it compacts and sends it to the API server as one byte per position (the
fraction in 255 steps, base64), next to the request's stats; the server maps it onto the documents
(`server.retention`).
"""

from __future__ import annotations

import base64

import torch

LEVELS = 255  # a byte per position


def kept_counts(kept: list[torch.Tensor], length: int) -> torch.Tensor:
    """How many of the `kept` keep sets ([kv_heads, keep] positions each, one per layer) hold each of the
    first `length` positions."""
    counts = torch.zeros(length, dtype=torch.int64)
    for positions in kept:
        counts += torch.bincount(positions.flatten().long(), minlength=length)[:length]
    return counts


def encode(counts: torch.Tensor, caches: int) -> str:
    """Counts out of `caches` (layers x KV heads) as base64 bytes of the fraction in `LEVELS` steps."""
    if caches <= 0:
        raise ValueError("a retention needs at least one cache")
    levels = torch.div(counts * LEVELS + caches // 2, caches, rounding_mode="floor").clamp(0, LEVELS)
    return base64.b64encode(bytes(levels.to(torch.uint8).tolist())).decode("ascii")


def decode(encoded: str) -> list[float]:
    """The kept fraction per position from `encode`'s text."""
    return [level / LEVELS for level in base64.b64decode(encoded)]
