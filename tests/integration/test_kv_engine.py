"""KV eviction inside vLLM, checked against things computed independently of it:
- greedy tokens and logprobs equal an HF-transformers reference that prunes its cache to the policy's keep
  set and decodes with logical positions (compression/reference.py), with chunked prefill in vLLM;
- policy `none` / ratio 0 is token- and logprob-identical to stock vLLM without the plugin;
- the block pool gets the freed blocks back and the request holds exactly what its kept tokens fill;
- compressed and plain requests run together equal their solo runs; prefix caching stays correct."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from compression.policies import LayerView, Policy, keep_indices
from compression.reference import generate_with_eviction
from compression.registry import create
from tests.kv_engine import (
    BLOCK_SIZE,
    engine,
    engine_kept,
    generate,
    kv_offsets,
    random_prompt,
    reference_retention,
    sampling,
    scheduler_of,
)

pytestmark = pytest.mark.integration
NEW_TOKENS = 32
LOGPROB_TOLERANCE = 1e-3
RETENTION_TOLERANCE = 0.5 / 255 + 1e-9  # the engine sends each kept fraction in 255 steps
EQUIVALENCE_POLICIES = ["snapkv", "streaming_llm", "knorm", "tova", "h2o", "expected_attention", "chunkkv"]
PROMPT_LENGTHS = [150, 233, 301]  # not multiples of the block size; several 64-token prefill chunks


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


def prompts_for(policy_index: int) -> list[list[int]]:
    return [random_prompt(100 * policy_index + i, length) for i, length in enumerate(PROMPT_LENGTHS)]


@pytest.fixture(scope="module")
def stock_outputs(peaky_model_dir: Path) -> list[Any]:
    """Stock vLLM (no plugin) on the first policy's prompts."""
    with engine(peaky_model_dir, eviction=False) as llm:
        return generate(llm, prompts_for(0), sampling(NEW_TOKENS))


@pytest.fixture(scope="module")
def llm(peaky_model_dir: Path, stock_outputs: list[Any]) -> Iterator[Any]:
    with engine(peaky_model_dir) as loaded:
        yield loaded


@pytest.fixture(scope="module")
def hf_model(peaky_model_dir: Path) -> Any:
    from transformers import LlamaForCausalLM

    return LlamaForCausalLM.from_pretrained(peaky_model_dir, dtype=torch.float32).eval()


def test_eviction_in_vllm_equals_the_hf_reference(llm: Any, hf_model: Any) -> None:
    ratio = 0.5
    prompts = [prompt for index in range(len(EQUIVALENCE_POLICIES)) for prompt in prompts_for(index)]
    params = [sampling(NEW_TOKENS, policy, ratio) for policy in EQUIVALENCE_POLICIES for _ in PROMPT_LENGTHS]
    outputs = generate(llm, prompts, params)  # all 18 requests in one batch
    for index, policy in enumerate(EQUIVALENCE_POLICIES):
        changed = 0
        for offset, prompt in enumerate(prompts_for(index)):
            got = outputs[index * len(PROMPT_LENGTHS) + offset]
            kept = engine_kept(len(prompt), create(policy), ratio)
            layers = hf_model.config.num_hidden_layers
            expected = generate_with_eviction(
                hf_model, prompt, create(policy), ratio, NEW_TOKENS, [kept] * layers
            )
            assert got.tokens == expected.tokens, f"{policy}, prompt {offset}"
            assert (
                max(abs(a - b) for a, b in zip(got.logprobs, expected.logprobs, strict=True))
                < LOGPROB_TOLERANCE
            )
            assert got.kv_stats == {
                "tokens_before": len(prompt),
                "tokens_after": kept,
                "blocks_before": cdiv(len(prompt), BLOCK_SIZE),
                "blocks_after": cdiv(kept, BLOCK_SIZE),
                "cached_contexts": 0,
                "cache_blocks": 0,
            }
            assert got.kv_retention is not None and len(got.kv_retention) == len(prompt)
            wanted = reference_retention(expected.kept, len(prompt))
            gaps = [abs(a - b) for a, b in zip(got.kv_retention, wanted, strict=True)]
            assert max(gaps) <= RETENTION_TOLERANCE, f"{policy}, prompt {offset}: retention"
            full = generate_with_eviction(hf_model, prompt, create("none"), 0.0, NEW_TOKENS)
            changed += full.tokens != got.tokens
        assert changed, f"{policy}: evicting half the prompt never changed the output; was anything evicted?"


def test_policy_none_and_ratio_zero_equal_stock_vllm(llm: Any, stock_outputs: list[Any]) -> None:
    prompts = prompts_for(0)
    for params in (
        sampling(NEW_TOKENS),
        sampling(NEW_TOKENS, "none", 0.5),
        sampling(NEW_TOKENS, "snapkv", 0.0),
    ):
        llm.reset_prefix_cache()  # as fresh as the stock engine was: a cache hit changes prefill chunking
        outputs = generate(llm, prompts, params)
        assert [out.tokens for out in outputs] == [out.tokens for out in stock_outputs]
        assert [out.logprobs for out in outputs] == [out.logprobs for out in stock_outputs]
        assert all(out.kv_stats is None for out in outputs)


def test_freed_blocks_return_to_the_pool_and_the_request_holds_what_it_keeps(llm: Any) -> None:
    scheduler = scheduler_of(llm)
    pool, manager = scheduler.kv_cache_manager.block_pool, scheduler.kv_cache_manager
    prompt, ratio, new_tokens = random_prompt(7, 290), 0.75, 40
    kept = engine_kept(len(prompt), create("knorm"), ratio)
    free_at_start = pool.get_num_free_blocks()
    llm.llm_engine.add_request("blocks", {"prompt_token_ids": prompt}, sampling(new_tokens, "knorm", ratio))
    (request_id,) = scheduler.requests  # vLLM makes the id unique with a suffix
    compacted_seen = False
    while llm.llm_engine.has_unfinished_requests():
        llm.llm_engine.step()
        request = scheduler.requests.get(request_id)
        if request is None:
            break
        held = len(manager.coordinator.single_type_managers[0].req_to_blocks[request_id])
        offset = kv_offsets(llm).get(request_id)
        if offset is None:  # still prefilling: the full prompt so far
            assert held == cdiv(request.num_computed_tokens, BLOCK_SIZE)
        else:
            compacted_seen = True
            assert offset == len(prompt) - kept
            assert held == cdiv(kept + request.num_computed_tokens - len(prompt), BLOCK_SIZE)
        assert pool.get_num_free_blocks() == free_at_start - held
    assert compacted_seen
    assert pool.get_num_free_blocks() == free_at_start


def test_compressed_and_plain_requests_together_equal_their_solo_runs(llm: Any) -> None:
    prompts = [random_prompt(50 + i, 180 + 25 * i) for i in range(6)]
    params = [
        sampling(NEW_TOKENS, "snapkv", 0.75),
        sampling(NEW_TOKENS),
        sampling(NEW_TOKENS, "streaming_llm", 0.5, sinks=8),
        sampling(NEW_TOKENS),
        sampling(NEW_TOKENS, "h2o", 0.6),
        sampling(NEW_TOKENS, "knorm", 0.875),
    ]
    solo = [generate(llm, [prompt], param)[0] for prompt, param in zip(prompts, params, strict=True)]
    together = generate(llm, prompts, params)
    for alone, mixed in zip(solo, together, strict=True):
        assert mixed.tokens == alone.tokens
        assert (
            max(abs(a - b) for a, b in zip(mixed.logprobs, alone.logprobs, strict=True)) < LOGPROB_TOLERANCE
        )
        assert mixed.kv_stats == alone.kv_stats


def test_compressed_requests_share_their_uncompressed_prompt_through_the_prefix_cache(llm: Any) -> None:
    """A compressed request writes its prompt's (uncompressed, correct) blocks into vLLM's prefix cache and
    reads hits that stop short of the queries its policy scores with; outputs are the same either way."""
    prompt, window = random_prompt(99, 200), 32
    compressed = sampling(NEW_TOKENS, "snapkv", 0.5, window=window)
    llm.reset_prefix_cache()
    cold = generate(llm, [prompt], compressed)[0]
    plain = generate(llm, [prompt], sampling(NEW_TOKENS))[0]
    assert plain.cached_tokens >= BLOCK_SIZE, "the compressed request left nothing in the prefix cache"
    warm = generate(llm, [prompt], compressed)[0]
    assert cold.cached_tokens == 0 and 0 < warm.cached_tokens <= len(prompt) - window
    assert warm.tokens == cold.tokens and warm.kv_stats == cold.kv_stats
    assert max(abs(a - b) for a, b in zip(warm.logprobs, cold.logprobs, strict=True)) < LOGPROB_TOLERANCE
    llm.reset_prefix_cache()
    plain_cold = generate(llm, [prompt], sampling(NEW_TOKENS))[0]
    assert plain_cold.cached_tokens == 0 and plain_cold.tokens == plain.tokens


def test_n_samples_of_a_compressed_request_share_one_prefill(llm: Any) -> None:
    """vLLM hashes a prompt's blocks when it allocates them, so the second sample of `n = 2` reads the first
    one's (uncompressed) prompt blocks, short of the policy's window, and prefills only the rest."""
    from vllm import SamplingParams

    from compression.spec import KVSpec

    prompt = random_prompt(96, 200)
    llm.reset_prefix_cache()
    extra = KVSpec.parse("snapkv-0.5").task().extra_args()
    params = SamplingParams(n=2, max_tokens=8, temperature=1.0, ignore_eos=True, extra_args=extra)
    (output,) = llm.generate([{"prompt_token_ids": prompt}], params, use_tqdm=False)
    assert len(output.outputs) == 2 and all(len(sample.token_ids) == 8 for sample in output.outputs)
    assert BLOCK_SIZE <= (output.num_cached_tokens or 0) <= len(prompt) - 32


def test_a_compaction_that_would_free_no_block_evicts_nothing(llm: Any) -> None:
    """40 tokens in two 32-token blocks: evicting 10 % would free no block, so all 40 stay (no compaction)."""
    prompt = random_prompt(98, 40)
    kept = generate(llm, [prompt], sampling(NEW_TOKENS, "knorm", 0.1))[0]
    llm.reset_prefix_cache()
    full = generate(llm, [prompt], sampling(NEW_TOKENS))[0]
    assert kept.tokens == full.tokens
    assert kept.kv_stats is not None and kept.kv_stats["tokens_after"] == kept.kv_stats["tokens_before"] == 40


def test_must_keep_tokens_survive_a_ratio_near_one(llm: Any, hf_model: Any) -> None:
    """snapkv at 0.99 of 150 tokens would keep 2; its 32-token window is kept whole (and the block filled)."""
    prompt, policy = random_prompt(97, 150), create("snapkv")
    got = generate(llm, [prompt], sampling(NEW_TOKENS, "snapkv", 0.99))[0]
    kept = engine_kept(len(prompt), policy, 0.99)
    assert kept == 32 and got.kv_stats is not None and got.kv_stats["tokens_after"] == kept
    layers = hf_model.config.num_hidden_layers
    expected = generate_with_eviction(hf_model, prompt, policy, 0.99, NEW_TOKENS, [kept] * layers)
    assert expected.kept[0][0].tolist() == list(range(len(prompt) - 32, len(prompt)))
    assert got.tokens == expected.tokens


def test_an_unreadable_cache_layout_is_refused_at_engine_start(
    peaky_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """vLLM picks the CPU cache layout from dtype and CPU (NEON on ARM, VSX on PowerPC, ...); eviction reads
    only 'vec', 'vec16' and 'amx', so any other must stop the engine before it serves, saying what to do."""
    from vllm.v1.attention.backends import cpu_attn

    from compression.vllm_integration.version import UnsupportedEngineError

    monkeypatch.setattr(cpu_attn, "_get_attn_isa", lambda *args, **kwargs: "neon")
    refused = pytest.raises(UnsupportedEngineError, match=r"layout neon .*--no-kv-eviction")
    with refused, engine(peaky_model_dir):
        pass
    monkeypatch.undo()
    with engine(peaky_model_dir, eviction=False) as stock:  # stock vLLM is unaffected by the check
        assert generate(stock, [random_prompt(1, 40)], sampling(2))[0].tokens


def test_an_engine_with_no_attention_layer_to_wrap_is_refused_at_start(
    peaky_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from compression.vllm_integration.cpu.runner import KVCompactRunner
    from compression.vllm_integration.version import UnsupportedEngineError

    monkeypatch.setattr(KVCompactRunner, "_kvc_attention_layers", lambda self: {})
    refused = pytest.raises(UnsupportedEngineError, match=r"found no attention layer .*\(--no-kv-eviction\)")
    with refused, engine(peaky_model_dir):
        pass


def test_a_failing_policy_falls_back_instead_of_stopping_the_engine(caplog: pytest.LogCaptureFixture) -> None:
    """A third-party policy that raises: its layer keeps the most recent tokens, and if combining the layers
    fails each layer keeps by its own scores; the engine logs it and keeps serving."""
    from compression.vllm_integration.cpu.runner import KVCompactRunner

    class Broken(Policy):
        name = "broken"

        def score(self, view: LayerView) -> torch.Tensor:
            raise RuntimeError("scoring broke")

        def across_layers(self, scores: list[torch.Tensor]) -> list[torch.Tensor]:
            raise RuntimeError("voting broke")

    view = LayerView(torch.randn(2, 5, 4), torch.randn(2, 5, 4), torch.randn(4, 1, 4))
    scores = KVCompactRunner._kvc_own_scores(Broken(), view)
    assert keep_indices(scores, 2).tolist() == [[3, 4], [3, 4]]
    own = [scores, scores.flip(-1)]
    assert KVCompactRunner._kvc_final_scores(Broken(), own) is own
    assert "failed to score 5 tokens" in caplog.text and "failed across layers" in caplog.text
