"""Helpers for tests that run vLLM in this process (the eviction scheduler and worker live in it)."""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from compression.policies import Policy
from compression.policies.base import kept_tokens
from compression.spec import KVSpec
from compression.vllm_integration.offline import (
    counted_preemptions,
    greedy,
    kv_retention_of,
    kv_stats_of,
    offline_engine,
    scheduler_of,
)

BLOCK_SIZE = 32


def sampling(max_tokens: int, policy: str | None = None, ratio: float = 0.0, **options: Any) -> Any:
    """Greedy sampling, EOS ignored, evicting `ratio` of the prompt's K/V with `policy` and its `options`."""
    kv = KVSpec(policy=policy, ratio=ratio, options=options or None) if policy is not None else None
    return greedy(max_tokens, kv)


__all__ = [
    "BLOCK_SIZE",
    "Generated",
    "counted_preemptions",
    "engine",
    "engine_kept",
    "generate",
    "kv_offsets",
    "random_prompt",
    "reference_retention",
    "sampling",
    "scheduler_of",
]


@dataclass(frozen=True)
class Generated:
    tokens: list[int]
    logprobs: list[float]
    kv_stats: dict[str, int] | None
    cached_tokens: int
    kv_retention: list[float] | None = None  # the kept fraction per compressed position


def reference_retention(kept: list[Any], length: int) -> list[float]:
    """Per position, the fraction of a reference's keep sets (one [kv_heads, kept] tensor per layer) that
    hold it, counted from plain sets."""
    keep_sets = [set(head.tolist()) for layer in kept for head in layer]
    return [sum(position in heads for heads in keep_sets) / len(keep_sets) for position in range(length)]


def engine_kept(length: int, policy: Policy, ratio: float, block_size: int = BLOCK_SIZE) -> int:
    """Tokens the engine keeps of a `length`-token prompt: the ratio's count, raised to the policy's
    must-keep tokens and to the end of the last block it holds."""
    return kept_tokens(length, ratio, policy.must_keep_count(length), block_size)


def kv_offsets(llm: Any) -> dict[str, int]:
    """The tokens each compacted or adopting request of the engine has evicted, by request id."""
    table = scheduler_of(llm).kvc_table
    return {request_id: state.offset for request_id, state in table.items() if state.offset is not None}


def random_prompt(seed: int, length: int) -> list[int]:
    rng = random.Random(seed)
    return [rng.randrange(100, 40000) for _ in range(length)]


@contextmanager
def engine(model: Path, eviction: bool = True, **overrides: Any) -> Iterator[Any]:
    """The offline engine with test defaults: block size 32, chunked prefill in 64-token steps."""
    settings = {"block_size": BLOCK_SIZE, "max_model_len": 1024, "max_num_batched_tokens": 64, **overrides}
    with offline_engine(model, eviction, **settings) as llm:
        yield llm


def generate(llm: Any, prompts: list[list[int]], params: Any) -> list[Generated]:
    """Greedy outputs of `prompts` run together (one `params` or one per prompt)."""
    outputs = llm.generate([{"prompt_token_ids": prompt} for prompt in prompts], params, use_tqdm=False)
    return [
        Generated(
            tokens=list(output.outputs[0].token_ids),
            logprobs=[next(iter(step.values())).logprob for step in output.outputs[0].logprobs],
            kv_stats=kv_stats_of(output),
            cached_tokens=output.num_cached_tokens or 0,
            kv_retention=kv_retention_of(output),
        )
        for output in outputs
    ]
