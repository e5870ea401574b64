"""KV eviction under tensor parallelism on the CPU build (`--tensor-parallel-size 2`, one worker process
per rank): each rank holds half the KV heads, scores and compacts its own, and the one scheduler frees the
blocks once. Greedy tokens, logprobs and block counts equal the same requests at TP = 1."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bench.models import save_tiny_llama
from server.app import cpu_thread_binding
from tests.architectures import PEAKY_LLAMA
from tests.kv_engine import engine, generate, random_prompt, sampling

pytestmark = pytest.mark.integration
NEW_TOKENS = 24
# per-head scores (snapkv, knorm), whole chunks voted by the layers (chunkkv), positions (streaming_llm)
POLICIES = ["snapkv", "knorm", "chunkkv", "streaming_llm"]
LOGPROB_TOLERANCE = 1e-3  # the all-reduce sums in another order


@pytest.fixture(scope="module")
def four_kv_head_model(tmp_path_factory: pytest.TempPathFactory, default_model_path: Path) -> Path:
    config = {**PEAKY_LLAMA, "num_key_value_heads": 4}  # two per rank
    return save_tiny_llama(tmp_path_factory.mktemp("tp-llama"), default_model_path, **config)


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="two CPU workers need two CPUs")
def test_eviction_at_tensor_parallel_2_equals_tensor_parallel_1(
    four_kv_head_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    prompts = [random_prompt(300 + i, 150 + 37 * i) for i in range(len(POLICIES) + 1)]
    params = [sampling(NEW_TOKENS, policy, 0.5) for policy in POLICIES] + [sampling(NEW_TOKENS)]
    with engine(four_kv_head_model) as llm:
        single = generate(llm, prompts, params)
    binding = cpu_thread_binding(2, sorted(os.sched_getaffinity(0)), numa_nodes=1)
    assert binding is not None
    monkeypatch.setenv("VLLM_CPU_OMP_THREADS_BIND", binding)  # as `lcrag serve` sets it
    with engine(four_kv_head_model, tensor_parallel_size=2, distributed_executor_backend="mp") as llm:
        parallel = generate(llm, prompts, params)
    for label, one, two in zip([*POLICIES, "plain"], single, parallel, strict=True):
        assert two.tokens == one.tokens, label
        gap = max(abs(a - b) for a, b in zip(two.logprobs, one.logprobs, strict=True))
        assert gap < LOGPROB_TOLERANCE, f"{label}: logprobs {gap:.1e} apart"
        assert two.kv_stats == one.kv_stats, label
    assert all(out.kv_stats is not None and out.kv_stats["blocks_after"] < out.kv_stats["blocks_before"]
               for out in parallel[: len(POLICIES)])  # fmt: skip
