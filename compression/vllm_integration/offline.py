"""vLLM's offline `LLM` in this process with the eviction scheduler and worker loaded (benchmarks, evals
and tests use it; the server loads the same classes through CLI flags)."""

from __future__ import annotations

import gc
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from compression.vllm_integration import engine_kwargs
from compression.vllm_integration.options import STATS_KEY, to_extra_args

# Scheduler and worker in this process (so callers can inspect the block pool), and a KV space in GiB.
IN_PROCESS_ENV = {"VLLM_ENABLE_V1_MULTIPROCESSING": "0", "VLLM_CPU_KVCACHE_SPACE": "1"}


@contextmanager
def offline_engine(
    model: Path | str, eviction: bool = True, kv_space_gb: int = 1, **overrides: Any
) -> Iterator[Any]:
    """An in-process `vllm.LLM` (float32, eager), with eviction unless `eviction=False` (stock vLLM);
    shut down on exit so another can start in the same process."""
    from vllm import LLM

    kwargs: dict[str, Any] = {
        "dtype": "float32",
        "enforce_eager": True,
        "mamba_ssm_cache_dtype": "float32",  # as `lcrag serve` on CPU: no reset warning on AVX-512 BF16
        "seed": 0,
    }
    with _environment({**IN_PROCESS_ENV, "VLLM_CPU_KVCACHE_SPACE": str(kv_space_gb)}):
        llm = LLM(str(model), **{**kwargs, **(engine_kwargs() if eviction else {}), **overrides})
        try:
            yield llm
        finally:
            llm.llm_engine.engine_core.shutdown()
            del llm
            gc.collect()


@contextmanager
def _environment(env: dict[str, str]) -> Iterator[None]:
    """`env` set inside the block, the previous values back after it (also when the engine fails to start)."""
    saved = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def scheduler_of(llm: Any) -> Any:
    """The engine's scheduler (in-process engines only)."""
    return llm.llm_engine.engine_core.engine_core.scheduler


def greedy(max_tokens: int, policy: str | None = None, ratio: float = 0.0, **options: Any) -> Any:
    """Greedy sampling params with EOS ignored, asking for eviction when `policy` is given."""
    from vllm import SamplingParams

    extra = to_extra_args(policy, ratio, options) if policy is not None else None
    return SamplingParams(max_tokens=max_tokens, temperature=0, logprobs=0, ignore_eos=True, extra_args=extra)


def kv_stats_of(output: Any) -> dict[str, int] | None:
    """The eviction stats the engine attached to a finished `RequestOutput`."""
    return (output.kv_transfer_params or {}).get(STATS_KEY)
