"""Preemption with KV eviction: in a KV cache too small for the batch, vLLM preempts (frees and later
recomputes) requests; compressed requests are recompressed with the same keep set and their outputs are
recomputed against the compressed prompt, so every output equals its run without preemption, and every
block is back in the pool at the end."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.kv_engine import (
    counted_preemptions,
    engine,
    generate,
    kv_offsets,
    random_prompt,
    sampling,
    scheduler_of,
)

pytestmark = pytest.mark.integration
NEW_TOKENS = 96


def test_preempted_requests_equal_their_solo_runs_and_no_block_leaks(peaky_model_dir: Path) -> None:
    prompts = [random_prompt(300 + i, 200 + 10 * i) for i in range(6)]
    params = [sampling(NEW_TOKENS, "snapkv", 0.5) for _ in range(4)] + [sampling(NEW_TOKENS)] * 2
    with engine(peaky_model_dir, num_gpu_blocks_override=20, max_model_len=512) as llm:
        scheduler = scheduler_of(llm)
        pool = scheduler.kv_cache_manager.block_pool
        free_at_start = pool.get_num_free_blocks()
        solo = [generate(llm, [prompt], param)[0] for prompt, param in zip(prompts, params, strict=True)]
        with counted_preemptions(llm) as preemptions:
            together = generate(llm, prompts, params)
        assert preemptions, "the batch fit; shrink the KV cache so the test exercises preemption"
        assert [out.tokens for out in together] == [out.tokens for out in solo]
        assert [out.kv_stats for out in together] == [out.kv_stats for out in solo]
        assert pool.get_num_free_blocks() == free_at_start
        assert not kv_offsets(llm)
