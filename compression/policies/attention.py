"""Policies that score tokens by the attention the prompt's own queries pay them."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from compression.policies.base import LayerView, Policy, leading, trailing


def observation_window(view: LayerView, window: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Zero scores to fill in before the last `window` tokens (the observation window, which the policy
    must keep), and the window's attention over the tokens before it, [q_heads, window, prefix] (None when
    the whole prompt is the window)."""
    window = min(window, view.length)
    prefix = view.length - window
    scores = torch.zeros(view.kv_heads, view.length)
    if prefix == 0:
        return scores, None
    return scores, view.window_attention()[:, -window:, :prefix]


@dataclass(frozen=True)
class WindowedPolicy(Policy):
    """A policy that always keeps its observation / recent window of `window` tokens."""

    window: int = 32

    def must_keep(self, length: int) -> torch.Tensor:
        return trailing(length, self.window)


@dataclass(frozen=True)
class SnapKV(WindowedPolicy):
    """SnapKV (Li et al., 2024, "SnapKV: LLM Knows What You are Looking for Before Generation"): the last
    `window` prompt queries (the observation window) vote with their attention, averaged over the window
    and the query heads of each KV head, smoothed by average pooling; the window itself is always kept."""

    name = "snapkv"
    query_window = 32
    kernel: int = 5

    def queries_needed(self) -> int | None:
        return self.window

    def score(self, view: LayerView) -> torch.Tensor:
        scores, attention = observation_window(view, self.window)
        if attention is not None:
            mean = attention.mean(dim=1)  # [q_heads, prefix]
            pooled = F.avg_pool1d(mean.unsqueeze(1), self.kernel, stride=1, padding=self.kernel // 2)
            scores[:, : mean.shape[-1]] = view.per_kv_head(pooled.squeeze(1))
        return scores


@dataclass(frozen=True)
class ChunkKV(WindowedPolicy):
    """ChunkKV (Liu et al., 2025, "ChunkKV: Semantic-Preserving KV Cache Compression"): the observation
    window's attention (as in SnapKV, summed over the window and every query head of the layer) is summed
    per run of `chunk` consecutive tokens and whole chunks are kept, the same ones for every KV head, so a
    fact (a number's digits, a name) is kept or evicted as a unit; the window itself is always kept.
    With `layers="shared"` the layers from `vote_from` of the depth up (middle layers already find what
    the question needs, GemFilter, Shi et al., 2024) vote with their normalised chunk scores on one keep set
    used by every layer; `layers="own"` lets each layer keep its own top chunks."""

    name = "chunkkv"
    query_window = 32
    chunk: int = 10
    layers: str = "shared"
    vote_from: float = 0.4

    def __post_init__(self) -> None:
        check_layer_vote(self.name, self.layers, self.vote_from)
        if self.chunk < 1 or self.window < 1:
            raise ValueError("chunkkv options chunk and window must be at least 1.")

    def queries_needed(self) -> int | None:
        return self.window

    def score(self, view: LayerView) -> torch.Tensor:
        scores, attention = observation_window(view, self.window)
        if attention is not None:
            per_token = attention.sum(dim=(0, 1))  # [prefix]
            prefix = per_token.shape[0]
            chunks = F.pad(per_token, (0, -prefix % self.chunk)).view(-1, self.chunk).sum(dim=1)
            scores[:, :prefix] = chunks.repeat_interleave(self.chunk)[:prefix]
        return scores

    def across_layers(self, scores: list[torch.Tensor]) -> list[torch.Tensor]:
        if self.layers == "own":
            return scores
        return shared_vote(scores, self.vote_from, self.must_keep(scores[0].shape[-1]))


@dataclass(frozen=True)
class TOVA(Policy):
    """TOVA (Oren et al., 2024, "Transformers are Multi-State RNNs"): keep the tokens the last prompt token
    attends to most, averaged over all heads of the layer (one ranking shared by every KV head)."""

    name = "tova"
    query_window = 1

    def score(self, view: LayerView) -> torch.Tensor:
        last = view.window_attention()[:, -1, :]  # [q_heads, n]
        return last.mean(dim=0).expand(view.kv_heads, -1).clone()

    def must_keep(self, length: int) -> torch.Tensor:
        return trailing(length, 1)


@dataclass(frozen=True)
class H2O(WindowedPolicy):
    """H2O (Zhang et al., 2023, "H2O: Heavy-Hitter Oracle"): the heavy hitters, tokens with the most
    attention accumulated over every prompt query (averaged over the query heads of each KV head), plus the
    `window` most recent tokens, which the paper keeps beside them (always kept here)."""

    name = "h2o"
    query_window = None

    def score(self, view: LayerView) -> torch.Tensor:
        return view.per_kv_head(view.accumulated_attention())


@dataclass(frozen=True)
class ExpectedAttention(Policy):
    """Expected attention (Devoto et al., 2025, "Expected Attention: KV Cache Compression by Estimating
    Attention from Future Queries Distribution"; kvpress's ExpectedAttentionPress): the queries still to
    come are modelled as a Gaussian, per query head, with the mean and covariance of the compressed span's
    own queries (its last `window`, sinks left out) before RoPE, rotated by the rotation averaged over the
    next `future` positions; a key's expected logit is k.mu/sqrt(d) + k^T Sigma k/(2d), the score the
    softmax of those (averaged over the query heads of each KV head) times ||v||. No question is needed, so
    one compressed context serves every later question; the first `sinks` tokens are always kept."""

    name = "expected_attention"
    query_window = 4096
    query_agnostic = True
    window: int = 4096
    future: int = 512
    sinks: int = 4

    def queries_needed(self) -> int | None:
        return self.window

    def must_keep(self, length: int) -> torch.Tensor:
        return leading(length, self.sinks)

    def score(self, view: LayerView) -> torch.Tensor:
        n, d = view.length, view.keys.shape[-1]
        queries = view.queries
        rotation = torch.eye(d)
        if view.rotary is not None:
            positions = torch.arange(n - queries.shape[1], n)
            queries = view.rotary.rotate(queries, positions, inverse=True)
            ahead = torch.arange(n, min(n + self.future, view.rotary.max_position))
            rotation = view.rotary.mean_rotation(ahead if len(ahead) else positions[-1:], d)
        first = n - queries.shape[1]  # position of the first query
        queries = queries[:, min(max(0, self.sinks - first), queries.shape[1] - 1) :]  # sinks are outliers
        mean = queries.mean(dim=1)  # [q_heads, d]
        centred = queries - mean.unsqueeze(1)
        covariance = centred.transpose(1, 2) @ centred / max(1, queries.shape[1])  # [q_heads, d, d]
        mean, covariance = mean @ rotation.T, rotation @ covariance @ rotation.T
        keys = view.keys.repeat_interleave(view.group, dim=0)  # [q_heads, n, d]
        logits = (keys @ mean.unsqueeze(-1)).squeeze(-1) / math.sqrt(d)
        logits = logits + ((keys @ covariance) * keys).sum(dim=-1) / (2 * d)
        expected = view.per_kv_head(logits.softmax(dim=-1))
        return expected * view.values.norm(dim=-1)


def check_layer_vote(policy: str, layers: str, vote_from: float) -> None:
    """Check the `layers` and `vote_from` options of a policy whose layers may vote (`shared_vote`)."""
    if layers not in ("shared", "own"):
        raise ValueError(f"{policy} option layers must be 'shared' or 'own'; got {layers!r}.")
    if not 0.0 <= vote_from < 1.0:
        raise ValueError(f"{policy} option vote_from must be in [0, 1); got {vote_from}.")


def shared_vote(scores: list[torch.Tensor], vote_from: float, must_keep: torch.Tensor) -> list[torch.Tensor]:
    """One keep ranking for every layer: the layers from `vote_from` of the depth up each normalise their
    scores (must-keep tokens left out) to shares summing to one, and the shares are averaged."""
    voters = scores[int(vote_from * len(scores)) :]
    shares = [layer.masked_fill(must_keep, 0.0) for layer in voters]
    vote = torch.stack([s / s.sum(dim=-1, keepdim=True).clamp_min(1e-30) for s in shares]).mean(dim=0)
    return [vote] * len(scores)
