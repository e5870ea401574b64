"""Helpers for tests that run vLLM in this process (the eviction scheduler and worker live in it)."""

from __future__ import annotations

import gc
import os
import random
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BLOCK_SIZE = 32
IN_PROCESS_ENV = {"VLLM_ENABLE_V1_MULTIPROCESSING": "0", "VLLM_CPU_KVCACHE_SPACE": "1"}


@dataclass(frozen=True)
class Generated:
    tokens: list[int]
    logprobs: list[float]
    kv_stats: dict[str, int] | None
    cached_tokens: int


def random_prompt(seed: int, length: int) -> list[int]:
    rng = random.Random(seed)
    return [rng.randrange(100, 40000) for _ in range(length)]


@contextmanager
def engine(model: Path, eviction: bool = True, **overrides: Any) -> Iterator[Any]:
    """An in-process vLLM `LLM` (block size 32, chunked prefill in 64-token steps), optionally with the
    eviction scheduler and worker; removed again on exit so the next one can start."""
    from vllm import LLM

    from compression.vllm_integration import engine_kwargs

    saved = {name: os.environ.get(name) for name in IN_PROCESS_ENV}
    os.environ.update(IN_PROCESS_ENV)
    kwargs: dict[str, Any] = dict(
        dtype="float32",
        enforce_eager=True,
        block_size=BLOCK_SIZE,
        max_model_len=1024,
        max_num_batched_tokens=64,
        seed=0,
    )
    llm = LLM(str(model), **{**kwargs, **(engine_kwargs() if eviction else {}), **overrides})
    try:
        yield llm
    finally:
        llm.llm_engine.engine_core.shutdown()
        del llm
        gc.collect()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def scheduler_of(llm: Any) -> Any:
    return llm.llm_engine.engine_core.engine_core.scheduler


def sampling(max_tokens: int, policy: str | None = None, ratio: float = 0.0, **options: Any) -> Any:
    from vllm import SamplingParams

    from compression.vllm_integration.options import to_extra_args

    extra = to_extra_args(policy, ratio, options) if policy is not None else None
    return SamplingParams(max_tokens=max_tokens, temperature=0, logprobs=0, ignore_eos=True, extra_args=extra)


def generate(llm: Any, prompts: list[list[int]], params: Any) -> list[Generated]:
    """Greedy outputs of `prompts` run together (one `params` or one per prompt)."""
    outputs = llm.generate([{"prompt_token_ids": prompt} for prompt in prompts], params, use_tqdm=False)
    return [
        Generated(
            tokens=list(output.outputs[0].token_ids),
            logprobs=[next(iter(step.values())).logprob for step in output.outputs[0].logprobs],
            kv_stats=(output.kv_transfer_params or {}).get("lcrag_kv"),
            cached_tokens=output.num_cached_tokens or 0,
        )
        for output in outputs
    ]
