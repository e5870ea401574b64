"""Policies that need no attention: the recent window, key norms, chance."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from compression.policies.base import PROTECTED, LayerView, Policy


@dataclass(frozen=True)
class NoEviction(Policy):
    """Keep everything (the default; with it the engine does nothing at all)."""

    name = "none"

    def score(self, view: LayerView) -> torch.Tensor:
        return torch.zeros(view.kv_heads, view.length)


@dataclass(frozen=True)
class StreamingLLM(Policy):
    """StreamingLLM (Xiao et al., 2023, "Efficient Streaming Language Models with Attention Sinks"): keep the
    first `sinks` tokens, which soak up attention, and the most recent ones."""

    name = "streaming_llm"
    sinks: int = 4

    def score(self, view: LayerView) -> torch.Tensor:
        scores = torch.arange(view.length, dtype=torch.float32).expand(view.kv_heads, -1).clone()
        scores[:, : self.sinks] = PROTECTED
        return scores


@dataclass(frozen=True)
class KeyNorm(Policy):
    """Key-norm (Devoto et al., 2024, "A Simple and Effective L2 Norm-Based Strategy for KV Cache
    Compression"): keys with a low L2 norm draw high attention, so keep the lowest-norm keys."""

    name = "knorm"

    def score(self, view: LayerView) -> torch.Tensor:
        return -view.keys.float().norm(dim=-1)


@dataclass(frozen=True)
class RandomEviction(Policy):
    """Random scores (a baseline), reproducible through `seed`."""

    name = "random"
    seed: int = 0

    def score(self, view: LayerView) -> torch.Tensor:
        generator = torch.Generator().manual_seed(self.seed)
        return torch.rand(view.kv_heads, view.length, generator=generator)
