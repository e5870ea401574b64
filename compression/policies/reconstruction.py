"""Query-agnostic scores from context reconstruction: what the model attends to while repeating the context
is what any later question may need from it."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from compression.policies.attention import check_layer_vote, shared_vote
from compression.policies.base import LayerView, ReconstructionPolicy, leading

QUERY_BLOCK = 128  # repeat queries scored at once: their logits over a 32K context stay near 150 MB
FUSED_LOG_SUM_EXP = hasattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu")


@dataclass(frozen=True)
class ReconstructionView:
    """One layer of one reconstruction pass, whose prompt is [context][repeat input], the repeat input being
    an instruction to repeat `span` of the context followed by that span again.

    keys: [kv_heads, length, head_dim] every key of the pass prompt, after RoPE (as cached).
    queries: [q_heads, length - repeat_start, head_dim] the repeat input's queries, after RoPE.
    Held in float32 whatever the cache's dtype.
    """

    keys: torch.Tensor
    queries: torch.Tensor
    span: tuple[int, int]
    repeat_start: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "keys", self.keys.float())
        object.__setattr__(self, "queries", self.queries.float())

    @property
    def group(self) -> int:
        return self.queries.shape[0] // self.keys.shape[0]


@dataclass(frozen=True)
class KVzip(ReconstructionPolicy):
    """KVzip (Kim et al., 2025, "KVzip: Query-Agnostic KV Cache Compression with Context Reconstruction"):
    the model is asked to repeat the context, one span at a time, and a context token's importance is the
    most attention any query of the repeat pays it (over the query heads sharing its KV head).

    `attend` sets what each repeat query's softmax runs over, besides the repeat up to itself:
    - "context" (default): the whole context, as the model attends, so a phrase the context says many
      times shares its attention among its copies while a fact stated once keeps all of it;
    - "span": the `sinks` first tokens and the span being repeated (the paper's chunked scoring, cheaper;
      the default before 2026-12-04).

    Scores are max-pooled over runs of `chunk` tokens (whole chunks kept, so a number's digits stay
    together); with `layers="shared"` the layers from `vote_from` of the depth up vote on one keep set for
    all layers. The passes run as ordinary engine requests before the context is compressed (`repeat`
    tokens each)."""

    name = "kvzip"
    sinks: int = 4
    chunk: int = 1
    layers: str = "own"
    vote_from: float = 0.4
    attend: str = "context"

    def __post_init__(self) -> None:
        check_layer_vote(self.name, self.layers, self.vote_from)
        if self.attend not in ("span", "context"):
            raise ValueError(f"kvzip option attend must be 'span' or 'context'; got {self.attend!r}.")
        if self.chunk < 1 or self.repeat < 16 or self.sinks < 0:
            raise ValueError("kvzip options: chunk >= 1, repeat >= 16 and sinks >= 0.")

    def must_keep(self, length: int) -> torch.Tensor:
        return leading(length, self.sinks)

    def score(self, view: LayerView) -> torch.Tensor:
        raise RuntimeError("kvzip scores come from reconstruction passes, and none ran for this context")

    def pass_scores(self, view: ReconstructionView) -> torch.Tensor:
        """[kv_heads, span length]: the most attention each token of the span gets from the repeat."""
        start, end = view.span
        if self.attend == "context":
            attended = view.keys[:, : view.repeat_start]  # the whole context
        else:
            first = min(self.sinks, start)
            attended = torch.cat([view.keys[:, :first], view.keys[:, start:end]], dim=1)
        queries = view.queries / math.sqrt(view.queries.shape[-1])  # scaled once: no pass over the logits
        log_normaliser = torch.logaddexp(  # each repeat query's softmax denominator (log)
            log_sum_exp(queries, per_query_head(attended, view.group), causal=False),
            log_sum_exp(queries, per_query_head(view.keys[:, view.repeat_start :], view.group), causal=True),
        )
        span = per_query_head(view.keys[:, start:end], view.group)
        best = span.new_zeros(span.shape[0], end - start)
        for top in range(0, queries.shape[1], QUERY_BLOCK):  # blocks of repeat queries bound the weights
            block = slice(top, top + QUERY_BLOCK)
            weights = (queries[:, block] @ span.transpose(1, 2) - log_normaliser[:, block, None]).exp()
            best = torch.maximum(best, weights.amax(dim=1))  # the most any repeat query pays each token
        return best.view(view.keys.shape[0], view.group, -1).amax(dim=1)

    def across_layers(self, scores: list[torch.Tensor]) -> list[torch.Tensor]:
        pooled = [chunk_max(layer, self.chunk) for layer in scores]
        if self.layers == "own":
            return pooled
        return shared_vote(pooled, self.vote_from, self.must_keep(scores[0].shape[-1]))


def per_query_head(keys: torch.Tensor, group: int) -> torch.Tensor:
    """[kv_heads, n, d] -> [q_heads, n, d]: each KV head's keys for every query head sharing it."""
    return keys.repeat_interleave(group, dim=0)


def log_sum_exp(queries: torch.Tensor, keys: torch.Tensor, causal: bool) -> torch.Tensor:
    """[heads, queries]: log of sum_j exp(q . k_j) over `keys` ([heads, n, d]; with `causal`, n equals the
    query count and query i sees keys 0..i). Scaled queries, float32.

    On CPU, torch's fused flash-attention kernel returns this log-normaliser without writing the
    [queries, n] logits (half the time of explicit logits at 7K tokens, `docs/benchmarks.md`); elsewhere
    (or without the kernel), blocks of explicit logits."""
    if FUSED_LOG_SUM_EXP and queries.device.type == "cpu":
        values = keys.new_zeros(1, *keys.shape)  # the kernel wants values; unused
        _, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
            queries[None], keys[None], values, 0.0, causal, scale=1.0
        )
        return lse[0]
    parts = []
    for top in range(0, queries.shape[1], QUERY_BLOCK):
        logits = queries[:, top : top + QUERY_BLOCK] @ keys.transpose(1, 2)
        if causal:
            rows = torch.arange(top, top + logits.shape[1]).unsqueeze(1)
            logits.masked_fill_(torch.arange(keys.shape[1]).unsqueeze(0) > rows, float("-inf"))
        parts.append(logits.logsumexp(dim=-1))
    return torch.cat(parts, dim=1)


def chunk_max(scores: torch.Tensor, chunk: int) -> torch.Tensor:
    """Each token's score replaced by the largest in its run of `chunk` tokens: [heads, n] -> [heads, n]."""
    if chunk == 1:
        return scores
    n = scores.shape[-1]
    padded = F.pad(scores, (0, -n % chunk), value=float("-inf"))
    best = padded.view(scores.shape[0], -1, chunk).amax(dim=-1)
    return best.repeat_interleave(chunk, dim=-1)[:, :n]
