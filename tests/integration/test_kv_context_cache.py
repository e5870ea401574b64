"""Context caches inside vLLM, checked against things computed independently of the engine:
- a question answered from an adopted cache equals the HF reference that compresses the context alone (with
  KVzip's reconstruction passes run in HF too), prunes it to the same number of tokens and prefills the
  question after it at logical positions;
- the block pool's own counts: adopters hold the cache's blocks by reference plus their own; dropping a
  cache returns every block; idle caches are released least recently used before anyone is preempted;
- a preempted adopter adopts again and gives the output it gives alone."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from compression.policies.base import cached_tokens
from compression.reconstruction import reconstruction_passes
from compression.reference import generate_with_context_cache
from compression.registry import create
from compression.spec import KVSpec
from compression.vllm_integration.control import control
from tests.kv_engine import (
    BLOCK_SIZE,
    counted_preemptions,
    engine,
    generate,
    kv_offsets,
    random_prompt,
    reference_retention,
    scheduler_of,
)

pytestmark = pytest.mark.integration
NEW_TOKENS = 24
TOLERANCE = 1e-3  # logprobs
CONTEXT = random_prompt(1, 230)  # not a multiple of the block size
SUFFIXES = [random_prompt(10 + i, 12 + 3 * i) for i in range(3)]


def cache_params(policy: str, ratio: float, new_tokens: int = NEW_TOKENS, **options: Any) -> Any:
    from vllm import SamplingParams

    extra = (
        KVSpec(policy=policy, ratio=ratio, options=options or None).task(len(CONTEXT), "docs").extra_args()
    )
    return SamplingParams(max_tokens=new_tokens, temperature=0, logprobs=0, ignore_eos=True, extra_args=extra)


def run_passes(llm: Any, tokenizer: Any, policy: str, options: dict[str, Any]) -> list[Any]:
    """KVzip's reconstruction passes, as the server runs them before a build."""
    from vllm import SamplingParams

    passes = reconstruction_passes(CONTEXT, tokenizer, options["repeat"], 1024)
    for reconstruction in passes:
        extra = (
            KVSpec(policy=policy, options=options)
            .scoring_pass(len(CONTEXT), reconstruction.span)
            .extra_args()
        )
        llm.generate(
            [{"prompt_token_ids": reconstruction.prompt}], SamplingParams(max_tokens=1, extra_args=extra)
        )
    return passes


@pytest.fixture(scope="module")
def llm(peaky_model_dir: Path) -> Iterator[Any]:
    with engine(peaky_model_dir) as loaded:
        yield loaded


@pytest.fixture(scope="module")
def hf_model(peaky_model_dir: Path) -> Any:
    from transformers import LlamaForCausalLM

    return LlamaForCausalLM.from_pretrained(peaky_model_dir, dtype=torch.float32).eval()


@pytest.fixture(scope="module")
def tokenizer(peaky_model_dir: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(peaky_model_dir)


@pytest.mark.parametrize(
    ("policy", "ratio", "options"),
    [
        ("knorm", 0.5, {}),
        ("kvzip", 0.5, {"repeat": 100, "chunk": 3}),
        ("kvzip", 0.5, {"repeat": 100, "attend": "span"}),  # the former default; the line above is "context"
        ("streaming_llm", 0.75, {"sinks": 8}),
    ],
)
def test_questions_from_an_adopted_cache_equal_the_hf_reference(
    llm: Any, hf_model: Any, tokenizer: Any, policy: str, ratio: float, options: dict[str, Any]
) -> None:
    control(llm, "drop")
    passes = run_passes(llm, tokenizer, policy, options) if policy == "kvzip" else []
    params = cache_params(policy, ratio, **options)
    outputs = [generate(llm, [CONTEXT + suffix], params)[0] for suffix in SUFFIXES]
    scorer = create(policy, **options)
    keep = cached_tokens(len(CONTEXT), ratio, scorer.must_keep_count(len(CONTEXT)), BLOCK_SIZE)
    assert [out.kv_stats["cache"] for out in outputs] == ["built", "hit", "hit"]
    assert all(
        out.kv_stats["tokens_after"] == keep and out.kv_stats["blocks_after"] == keep // 32 for out in outputs
    )
    assert [out.cached_tokens for out in outputs[1:]] == [
        len(CONTEXT)
    ] * 2  # adopters prefill only themselves
    differs = 0
    for suffix, got in zip(SUFFIXES, outputs, strict=True):
        expected = generate_with_context_cache(hf_model, CONTEXT, suffix, scorer, keep, NEW_TOKENS, passes)
        assert got.tokens == expected.tokens
        assert max(abs(a - b) for a, b in zip(got.logprobs, expected.logprobs, strict=True)) < TOLERANCE
        assert got.kv_retention is not None  # adopters report what the cache's compaction kept
        wanted = reference_retention(expected.kept, len(CONTEXT))
        assert max(abs(a - b) for a, b in zip(got.kv_retention, wanted, strict=True)) <= 0.5 / 255 + 1e-9
        full = generate_with_context_cache(
            hf_model, CONTEXT, suffix, create("knorm"), len(CONTEXT), NEW_TOKENS
        )
        differs += full.tokens != got.tokens
    assert differs, "compressing the context never changed an answer; was anything evicted?"


def test_adopters_hold_the_cache_by_reference_and_dropping_it_returns_every_block(llm: Any) -> None:
    scheduler = scheduler_of(llm)
    manager, pool = scheduler.kv_cache_manager, scheduler.kv_cache_manager.block_pool
    control(llm, "drop")
    llm.reset_prefix_cache()
    free_at_start = pool.get_num_free_blocks()
    params = cache_params("knorm", 0.5)
    generate(llm, [CONTEXT + SUFFIXES[0]], params)  # builds
    (cache,) = manager.kvc_caches.caches.values()
    cache_ids = [block.block_id for block in cache.blocks]
    assert all(block.ref_cnt == 1 for block in cache.blocks) and all(
        b.block_hash is None for b in cache.blocks
    )
    for index, suffix in enumerate(SUFFIXES):
        llm.llm_engine.add_request(f"adopter-{index}", {"prompt_token_ids": CONTEXT + suffix}, params)
    checked = False
    while llm.llm_engine.has_unfinished_requests():
        llm.llm_engine.step()
        offsets = kv_offsets(llm)
        running = [rid for rid in scheduler.requests if rid in offsets]
        if not running:
            continue
        checked = True
        assert all(block.ref_cnt == 1 + len(running) for block in cache.blocks)
        own = 0
        for request_id in running:
            blocks = [block.block_id for block in manager.kvc_blocks[request_id]]
            assert blocks[: len(cache_ids)] == cache_ids
            own += len(blocks) - len(cache_ids)
            request = scheduler.requests[request_id]
            assert len(blocks) == -(-(request.num_computed_tokens - offsets[request_id]) // BLOCK_SIZE)
        assert pool.get_num_free_blocks() == free_at_start - len(cache_ids) - own
    assert checked
    assert control(llm, "list")["caches"][0]["hits"] == len(SUFFIXES)
    dropped = control(llm, "drop", label="docs")
    assert [entry["blocks"] for entry in dropped["dropped"]] == [len(cache_ids)] and dropped[
        "cached_contexts"
    ] == 0
    llm.reset_prefix_cache()  # the builder's uncompressed context blocks stay reusable in the prefix cache
    assert pool.get_num_free_blocks() == free_at_start
    assert all(pool.blocks[block_id].ref_cnt == 0 for block_id in cache_ids)


def test_idle_caches_are_released_least_recently_used_before_anyone_is_preempted(
    peaky_model_dir: Path,
) -> None:
    contexts = [random_prompt(200 + i, 230) for i in range(3)]
    with engine(peaky_model_dir, num_gpu_blocks_override=24, max_model_len=512) as small:
        for index, context in enumerate(contexts):
            extra = KVSpec.parse("knorm-0.5").task(len(context), f"c{index}").extra_args()
            generate(small, [context + SUFFIXES[0]], _params(extra))
        assert control(small, "list")["cached_contexts"] == 3  # 3 x 4 blocks of 23
        extra = KVSpec.parse("knorm-0.5").task(len(contexts[1]), "c1").extra_args()
        generate(small, [contexts[1] + SUFFIXES[1]], _params(extra))  # c1 is now the most recently used
        big = random_prompt(300, 400)  # 13 blocks + its answer: needs more than the free ones
        with counted_preemptions(small) as preemptions:
            generate(small, [big], _params(None))
        left = control(small, "list")
        assert preemptions == [] and left["released_under_pressure"] == 1
        # c0, the least recently used, went; the rest are listed most recently used first
        assert [entry["labels"] for entry in left["caches"]] == [["c1"], ["c2"]]


def _params(extra: dict[str, Any] | None) -> Any:
    from vllm import SamplingParams

    return SamplingParams(max_tokens=NEW_TOKENS, temperature=0, logprobs=0, ignore_eos=True, extra_args=extra)


def test_preempted_adopters_adopt_again_and_equal_their_solo_runs(peaky_model_dir: Path) -> None:
    new_tokens = 96
    with engine(peaky_model_dir, num_gpu_blocks_override=20, max_model_len=512) as small:
        scheduler = scheduler_of(small)
        free_at_start = scheduler.kv_cache_manager.block_pool.get_num_free_blocks()
        params = cache_params("knorm", 0.5, new_tokens=new_tokens)
        generate(small, [CONTEXT + SUFFIXES[0]], params)  # builds (4 blocks)
        solo = [generate(small, [CONTEXT + suffix], params)[0] for suffix in SUFFIXES]
        with counted_preemptions(small) as preemptions:
            together = generate(small, [CONTEXT + suffix for suffix in SUFFIXES] * 2, params)
        assert preemptions, "the batch fit; shrink the KV cache so the test exercises preemption"
        assert [out.tokens for out in together] == [out.tokens for out in solo] * 2
        assert all(out.kv_stats["cache"] == "hit" for out in together)
        control(small, "drop")
        assert scheduler.kv_cache_manager.block_pool.get_num_free_blocks() == free_at_start
        assert not kv_offsets(small)
