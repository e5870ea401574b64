"""What every eviction policy shares: the view of one layer it scores, and the keep-set mechanics.

A policy only scores: `score(view) -> [kv_heads, n_tokens]`, higher = keep; `across_layers` may then turn
every layer's scores into the ones each layer keeps by (one keep set voted by the layers, say).
`keep_indices` turns scores into the tokens kept per KV head (the same count for every head). Tokens a
policy must never evict (attention sinks, the observation window) are its `must_keep` mask, which the
mechanics honour before ranking the rest by score; `kept_tokens` / `cached_tokens` say how many tokens a
compaction keeps, never fewer than the mask and always up to the end of the last block it holds anyway.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import torch

if TYPE_CHECKING:
    from compression.policies.reconstruction import ReconstructionView


@dataclass(frozen=True)
class Rotary:
    """The model's rotary position embedding (rotate-half convention, as Llama's): `cos_sin(positions)`
    gives cos and sin, each [len(positions), dims / 2], for the first `dims` dimensions of a head."""

    cos_sin: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
    dims: int
    max_position: int

    def rotate(self, x: torch.Tensor, positions: torch.Tensor, inverse: bool = False) -> torch.Tensor:
        """x [heads, len, head_dim] rotated to `positions` (or back from them, `inverse`)."""
        cos, sin = self.cos_sin(positions)
        sin = -sin if inverse else sin
        half = self.dims // 2
        first, second, rest = x[..., :half], x[..., half : self.dims], x[..., self.dims :]
        return torch.cat([first * cos - second * sin, second * cos + first * sin, rest], dim=-1)

    def mean_rotation(self, positions: torch.Tensor, head_dim: int) -> torch.Tensor:
        """The rotation matrix averaged over `positions`, [head_dim, head_dim] (identity past `dims`)."""
        cos, sin = (part.mean(dim=0) for part in self.cos_sin(positions))
        half = self.dims // 2
        matrix = torch.eye(head_dim)
        index = torch.arange(half)
        matrix[index, index] = matrix[index + half, index + half] = cos
        matrix[index, index + half], matrix[index + half, index] = -sin, sin
        return matrix


@dataclass(frozen=True)
class LayerView:
    """One layer of one request at the end of its prompt prefill.

    keys, values: [kv_heads, n, head_dim], keys after RoPE (as cached).
    queries: [q_heads, w, head_dim] after RoPE, the prompt's last `w` queries (all n for policies whose
    `query_window` is None); q_heads is a multiple of kv_heads (grouped-query attention).
    rotary: the model's RoPE, for policies that reason about positions (None when unknown).
    Tensors are held in float32 whatever the cache's dtype, so a bfloat16 cache scores like a float32 one.
    """

    keys: torch.Tensor
    values: torch.Tensor
    queries: torch.Tensor
    rotary: Rotary | None = None

    def __post_init__(self) -> None:
        for name in ("keys", "values", "queries"):
            object.__setattr__(self, name, getattr(self, name).float())

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
        q = self.queries[:, start:end]
        k = self.keys.repeat_interleave(self.group, dim=0)
        logits = q @ k.transpose(1, 2) / math.sqrt(q.shape[-1])
        query_positions = torch.arange(n - w + start, n - w + end).unsqueeze(1)
        future = torch.arange(n).unsqueeze(0) > query_positions
        return logits.masked_fill(future, float("-inf")).softmax(dim=-1)

    def accumulated_attention(self, block: int = 512) -> torch.Tensor:
        """`window_attention` summed over the queries, [q_heads, n], `block` queries at a time (memory
        q_heads x block x n rather than x w x n). Each block multiplies only the keys its queries can see,
        masks only its diagonal square, and sums its rows as one product (each query's exponentials times
        the inverse of their sum), which is several times faster than summing `window_attention` at 7K."""
        w, n = self.queries.shape[1], self.length
        heads, head_dim = self.queries.shape[0], self.queries.shape[-1]
        total = torch.zeros(heads, n)
        above_diagonal = torch.ones(block, block, dtype=torch.bool).triu(diagonal=1)
        for start in range(0, w, block):
            size = min(w, start + block) - start
            visible = n - w + start + size  # keys up to the block's last query
            queries = self.queries[:, start : start + size]
            grouped = queries.reshape(self.kv_heads, self.group * size, head_dim)
            logits = (grouped / math.sqrt(head_dim)) @ self.keys[:, :visible].transpose(1, 2)
            logits = logits.view(heads, size, visible)
            logits[:, :, visible - size :].masked_fill_(above_diagonal[:size, :size], float("-inf"))
            weights = logits.sub_(logits.amax(dim=-1, keepdim=True)).exp_()  # unnormalised softmax
            inverse_sums = weights.sum(dim=-1, keepdim=True).reciprocal_().transpose(1, 2)  # [heads, 1, size]
            total[:, :visible] += (inverse_sums @ weights).squeeze(1)
        return total

    def per_kv_head(self, per_query_head: torch.Tensor) -> torch.Tensor:
        """[q_heads, n] -> [kv_heads, n], averaging the query heads that share a KV head."""
        return per_query_head.view(self.kv_heads, self.group, -1).mean(dim=1)


@dataclass(frozen=True)
class Policy:
    """Base of all policies; subclasses are frozen dataclasses whose fields are their options."""

    name: ClassVar[str]
    query_window: ClassVar[int | None] = 0  # queries the policy needs: 0 none, w the last w, None all
    # True when the scores never look at a question after the context, so one compressed context can serve
    # every later question (collection caches accept only these)
    query_agnostic: ClassVar[bool] = False
    # True when the scores come from reconstruction passes run before the compaction (`ReconstructionPolicy`)
    needs_reconstruction: ClassVar[bool] = False

    def score(self, view: LayerView) -> torch.Tensor:
        raise NotImplementedError

    def queries_needed(self) -> int | None:
        return self.query_window

    def must_keep(self, length: int) -> torch.Tensor:
        """[length] booleans, True for tokens never evicted (sinks, an observation window); none here."""
        return torch.zeros(length, dtype=torch.bool)

    def must_keep_count(self, length: int) -> int:
        return int(self.must_keep(length).sum())

    def across_layers(self, scores: list[torch.Tensor]) -> list[torch.Tensor]:
        """The scores each layer keeps by, given every layer's own `score` (in layer order); by default each
        layer keeps by its own. Called once per request, after the last layer has been scored."""
        return scores


@dataclass(frozen=True)
class ReconstructionPolicy(Policy):
    """A policy scored by reconstruction passes (KVzip): before a context is compressed the engine runs
    passes that ask the model to repeat it, `repeat` tokens at a time, and keeps the scores they yield."""

    needs_reconstruction: ClassVar[bool] = True
    query_window: ClassVar[int | None] = 0  # the scores come from the passes, not the compressed prompt
    query_agnostic: ClassVar[bool] = True
    repeat: int = 512

    def pass_scores(self, view: ReconstructionView) -> torch.Tensor:
        """[kv_heads, span length]: how much one pass's repeat attends to each token of the span."""
        raise NotImplementedError


def leading(length: int, count: int) -> torch.Tensor:
    """A must-keep mask of the first `count` tokens."""
    mask = torch.zeros(length, dtype=torch.bool)
    mask[:count] = True
    return mask


def trailing(length: int, count: int) -> torch.Tensor:
    """A must-keep mask of the last `count` tokens."""
    mask = torch.zeros(length, dtype=torch.bool)
    mask[max(0, length - count) :] = True
    return mask


def kept_count(length: int, ratio: float) -> int:
    """Tokens kept when `ratio` of `length` is evicted (kvpress convention), at least one."""
    return max(1, length - math.floor(ratio * length))


def kept_tokens(length: int, ratio: float, must_keep: int = 0, block_size: int = 1) -> int:
    """Tokens a request keeps when `ratio` of its `length` prompt tokens is evicted from `block_size`-token
    blocks: `kept_count`, raised to the must-keep tokens, then to the end of the last block it still holds
    (those slots cost no memory, so evicting them would lose tokens for nothing)."""
    kept = max(kept_count(length, ratio), must_keep)
    return min(length, -(-kept // block_size) * block_size)


def cached_tokens(length: int, ratio: float, must_keep: int, block_size: int) -> int:
    """Tokens a shared context cache keeps: whole blocks only (later requests append after them), rounded up
    but never past the context's last whole block; 0 when that cannot hold the must-keep tokens."""
    kept = max(kept_count(length, ratio), must_keep)
    blocks = min(-(-kept // block_size), length // block_size)
    return blocks * block_size if blocks * block_size >= must_keep else 0


def keep_indices(scores: torch.Tensor, keep: int, must_keep: torch.Tensor | None = None) -> torch.Tensor:
    """The `keep` token positions kept per KV head, in ascending position order: [kv_heads, keep]: every
    `must_keep` position, then the best-scored others."""
    heads, length = scores.shape
    if keep >= length:
        return torch.arange(length).expand(heads, -1)
    if must_keep is None or not must_keep.any():
        return scores.topk(keep, dim=-1).indices.sort(dim=-1).values
    forced = must_keep.nonzero().squeeze(1)
    if keep < len(forced):
        raise ValueError(f"keeping {keep} tokens cannot hold the {len(forced)} that must be kept")
    others = scores.masked_fill(must_keep, float("-inf")).topk(keep - len(forced), dim=-1).indices
    return torch.cat([forced.expand(heads, -1), others], dim=-1).sort(dim=-1).values
