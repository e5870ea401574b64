"""What every eviction policy shares: the view of one layer it scores, and the keep-set mechanics.

A policy only scores: `score(view) -> [kv_heads, n_tokens]`, higher = keep; `across_layers` may then turn
every layer's scores into the ones each layer keeps by (one keep set voted by the layers, say).
`keep_indices` turns scores into the tokens kept per KV head (the same count for every head). Tokens a
policy must never evict (attention sinks, the observation window) get the score `PROTECTED`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch

PROTECTED = float("inf")


@dataclass(frozen=True)
class LayerView:
    """One layer of one request at the end of its prompt prefill.

    keys, values: [kv_heads, n, head_dim], keys after RoPE (as cached).
    queries: [q_heads, w, head_dim] after RoPE, the prompt's last `w` queries (all n for policies whose
    `query_window` is None); q_heads is a multiple of kv_heads (grouped-query attention).
    """

    keys: torch.Tensor
    values: torch.Tensor
    queries: torch.Tensor

    @property
    def kv_heads(self) -> int:
        return self.keys.shape[0]

    @property
    def length(self) -> int:
        return self.keys.shape[1]

    @property
    def group(self) -> int:
        return self.queries.shape[0] // self.kv_heads

    def window_attention(self, start: int = 0, end: int | None = None) -> torch.Tensor:
        """Softmax attention of the view's queries `start:end` (of the prompt's last w) over all n keys,
        causal: [q_heads, end - start, n] in float32."""
        w, n = self.queries.shape[1], self.length
        end = w if end is None else end
        q = self.queries[:, start:end].float()
        k = self.keys.float().repeat_interleave(self.group, dim=0)
        logits = q @ k.transpose(1, 2) / math.sqrt(q.shape[-1])
        query_positions = torch.arange(n - w + start, n - w + end).unsqueeze(1)
        future = torch.arange(n).unsqueeze(0) > query_positions
        return logits.masked_fill(future, float("-inf")).softmax(dim=-1)

    def accumulated_attention(self, block: int = 512) -> torch.Tensor:
        """`window_attention` summed over the queries, [q_heads, n], `block` queries at a time (memory
        q_heads x block x n rather than x w x n)."""
        w = self.queries.shape[1]
        total = torch.zeros(self.queries.shape[0], self.length)
        for start in range(0, w, block):
            total += self.window_attention(start, min(w, start + block)).sum(dim=1)
        return total

    def per_kv_head(self, per_query_head: torch.Tensor) -> torch.Tensor:
        """[q_heads, n] -> [kv_heads, n], averaging the query heads that share a KV head."""
        return per_query_head.view(self.kv_heads, self.group, -1).mean(dim=1)


@dataclass(frozen=True)
class Policy:
    """Base of all policies; subclasses are frozen dataclasses whose fields are their options."""

    name: ClassVar[str]
    query_window: ClassVar[int | None] = 0  # queries the policy needs: 0 none, w the last w, None all

    def score(self, view: LayerView) -> torch.Tensor:
        raise NotImplementedError

    def queries_needed(self) -> int | None:
        return self.query_window

    def across_layers(self, scores: list[torch.Tensor]) -> list[torch.Tensor]:
        """The scores each layer keeps by, given every layer's own `score` (in layer order); by default each
        layer keeps by its own. Called once per request, after the last layer has been scored."""
        return scores


def kept_count(length: int, ratio: float) -> int:
    """Tokens kept when `ratio` of `length` is evicted (kvpress convention), at least one."""
    return max(1, length - math.floor(ratio * length))


def keep_indices(scores: torch.Tensor, keep: int) -> torch.Tensor:
    """The `keep` best-scored token positions per KV head, in ascending position order: [kv_heads, keep]."""
    if keep >= scores.shape[-1]:
        return torch.arange(scores.shape[-1]).expand(scores.shape[0], -1)
    return scores.topk(keep, dim=-1).indices.sort(dim=-1).values
