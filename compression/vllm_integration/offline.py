"""vLLM's offline `LLM` in this process with the eviction scheduler and worker loaded (benchmarks, evals
and tests use it; the server loads the same classes through CLI flags)."""

from __future__ import annotations

import gc
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from compression.spec import RETENTION_KEY, STATS_KEY, KVSpec
from compression.vllm_integration import engine_kwargs

# Scheduler and worker in this process (so callers can inspect the block pool), and a KV space in GiB.
IN_PROCESS_ENV = {"VLLM_ENABLE_V1_MULTIPROCESSING": "0", "VLLM_CPU_KVCACHE_SPACE": "1"}
# Set by `CPUWorker.init_device` in the process it runs in; a server started later would inherit it and
# warn that it is an unknown vLLM variable.
VLLM_WRITES = ("VLLM_DIST_IDENT",)


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
    """`env` set inside the block, the previous values back after it (also when the engine fails to start),
    and those vLLM writes into this process itself (`VLLM_WRITES`) as they were before."""
    saved = {name: os.environ.get(name) for name in [*env, *VLLM_WRITES]}
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


@contextmanager
def counted_preemptions(llm: Any) -> Iterator[list[str]]:
    """The ids of the requests the engine's scheduler preempts inside the block."""
    scheduler = scheduler_of(llm)
    preempted: list[str] = []
    preempt = scheduler._preempt_request

    def counted(request: Any, *args: Any, **kwargs: Any) -> Any:
        preempted.append(request.request_id)
        return preempt(request, *args, **kwargs)

    scheduler._preempt_request = counted
    try:
        yield preempted
    finally:
        scheduler._preempt_request = preempt


def greedy(max_tokens: int, kv: KVSpec | None = None) -> Any:
    """Greedy sampling params with EOS ignored, asking for `kv`'s eviction of the prompt when given."""
    from vllm import SamplingParams

    extra = kv.task().extra_args() if kv is not None else None
    return SamplingParams(max_tokens=max_tokens, temperature=0, logprobs=0, ignore_eos=True, extra_args=extra)


def kv_stats_of(output: Any) -> dict[str, int] | None:
    """The eviction stats the engine attached to a finished `RequestOutput`."""
    return (output.kv_transfer_params or {}).get(STATS_KEY)


def kv_retention_of(output: Any) -> list[float] | None:
    """What the engine's compaction of a finished `RequestOutput` kept per prompt position (or None)."""
    from compression import retention

    encoded = (output.kv_transfer_params or {}).get(RETENTION_KEY)
    return retention.decode(encoded) if encoded is not None else None


def build_context_cache(
    llm: Any,
    tokenizer: Any,
    context: list[int],
    kv: KVSpec,
    label: str | None = None,
) -> dict[str, Any] | None:
    """Compress `context` into a resident context cache on an offline engine, as the server's
    `PUT /v1/collections/{name}/kv-cache` does: the policy's reconstruction passes first (KVzip-style
    policies), then a build request; returns the build's KV stats."""
    from vllm import SamplingParams

    from compression.policies.base import ReconstructionPolicy
    from compression.reconstruction import reconstruction_passes

    scorer = kv.policy_object
    if isinstance(scorer, ReconstructionPolicy):
        max_model_len = llm.llm_engine.model_config.max_model_len
        passes = reconstruction_passes(context, tokenizer, scorer.repeat, max_model_len)
        for reconstruction in passes:  # one by one: the first fills vLLM's prefix cache with the context
            extra = kv.scoring_pass(len(context), reconstruction.span).extra_args()
            prompts = [{"prompt_token_ids": reconstruction.prompt}]
            llm.generate(prompts, SamplingParams(max_tokens=1, extra_args=extra), use_tqdm=False)
    extra = kv.task(len(context), label).extra_args()
    (output,) = llm.generate(
        [{"prompt_token_ids": list(context)}], SamplingParams(max_tokens=1, extra_args=extra), use_tqdm=False
    )
    return kv_stats_of(output)
