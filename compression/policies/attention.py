"""Policies that score tokens by the attention the prompt's own queries pay them."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from compression.policies.base import PROTECTED, LayerView, Policy


@dataclass(frozen=True)
class SnapKV(Policy):
    """SnapKV (Li et al., 2024, "SnapKV: LLM Knows What You are Looking for Before Generation"): the last
    `window` prompt queries (the observation window) vote with their attention, averaged over the window
    and the query heads of each KV head, smoothed by average pooling; the window itself is always kept."""

    name = "snapkv"
    query_window = 32
    window: int = 32
    kernel: int = 5

    def queries_needed(self) -> int | None:
        return self.window

    def score(self, view: LayerView) -> torch.Tensor:
        window = min(self.window, view.length)
        prefix = view.length - window
        scores = torch.full((view.kv_heads, view.length), PROTECTED)
        if prefix == 0:  # the whole prompt is the observation window
            return scores
        attention = view.window_attention()[:, -window:, :prefix].mean(dim=1)  # [q_heads, prefix]
        pooled = F.avg_pool1d(attention.unsqueeze(1), self.kernel, stride=1, padding=self.kernel // 2)
        scores[:, :prefix] = view.per_kv_head(pooled.squeeze(1))
        return scores


@dataclass(frozen=True)
class TOVA(Policy):
    """TOVA (Oren et al., 2024, "Transformers are Multi-State RNNs"): keep the tokens the last prompt token
    attends to most, averaged over all heads of the layer (one ranking shared by every KV head)."""

    name = "tova"
    query_window = 1

    def score(self, view: LayerView) -> torch.Tensor:
        last = view.window_attention()[:, -1, :]  # [q_heads, n]
        scores = last.mean(dim=0).expand(view.kv_heads, -1).clone()
        scores[:, -1] = PROTECTED
        return scores


@dataclass(frozen=True)
class H2O(Policy):
    """H2O (Zhang et al., 2023, "H2O: Heavy-Hitter Oracle"): attention accumulated over every prompt query
    (the heavy hitters), averaged over the query heads of each KV head."""

    name = "h2o"
    query_window = None

    def score(self, view: LayerView) -> torch.Tensor:
        return view.per_kv_head(view.window_attention().sum(dim=1))


@dataclass(frozen=True)
class ExpectedAttention(Policy):
    """Expected attention (after Devoto et al., 2025, kvpress's ExpectedAttentionPress): model the coming
    queries as a Gaussian with the mean and covariance of the last `window` prompt queries; a key's expected
    logit is k.mu/sqrt(d) + k^T Sigma k/(2d); the score is the softmax of those logits times ||v||.
    Unlike kvpress, queries are not re-rotated to future positions."""

    name = "expected_attention"
    query_window = 64
    window: int = 64

    def queries_needed(self) -> int | None:
        return self.window

    def score(self, view: LayerView) -> torch.Tensor:
        d = view.keys.shape[-1]
        window = min(self.window, view.queries.shape[1])
        queries = view.queries[:, -window:, :].float().reshape(view.kv_heads, view.group * window, d)
        mean = queries.mean(dim=1)  # [kv_heads, d]
        centred = queries - mean.unsqueeze(1)
        covariance = centred.transpose(1, 2) @ centred / max(1, queries.shape[1] - 1)  # [kv_heads, d, d]
        keys = view.keys.float()
        logits = (keys @ mean.unsqueeze(-1)).squeeze(-1) / math.sqrt(d)
        logits = logits + ((keys @ covariance) * keys).sum(dim=-1) / (2 * d)
        return logits.softmax(dim=-1) * view.values.float().norm(dim=-1)
