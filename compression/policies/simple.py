"""Policies that need no attention: the recent window, key norms, chance."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from compression.policies.base import LayerView, Policy, leading


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
    query_agnostic = True
    sinks: int = 4

    def score(self, view: LayerView) -> torch.Tensor:
        return torch.arange(view.length, dtype=torch.float32).expand(view.kv_heads, -1).clone()

    def must_keep(self, length: int) -> torch.Tensor:
        return leading(length, self.sinks)


@dataclass(frozen=True)
class KeyNorm(Policy):
    """Key-norm (Devoto et al., 2024, "A Simple and Effective L2 Norm-Based Strategy for KV Cache
    Compression"): keys with a low L2 norm draw high attention, so keep the lowest-norm keys."""

    name = "knorm"
    query_agnostic = True

    def score(self, view: LayerView) -> torch.Tensor:
        return -view.keys.norm(dim=-1)


@dataclass(frozen=True)
class RandomEviction(Policy):
    """Random scores (a baseline), reproducible through `seed`."""

    name = "random"
    query_agnostic = True
    seed: int = 0

    def score(self, view: LayerView) -> torch.Tensor:
        generator = torch.Generator().manual_seed(self.seed)
        return torch.rand(view.kv_heads, view.length, generator=generator)
