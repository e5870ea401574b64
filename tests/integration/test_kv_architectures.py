"""KV eviction on the architectures people serve for long context — Qwen2 (q/k/v biases), Qwen3 (q/k
norms), Mistral, Phi-3 with LongRoPE, Llama with llama3 RoPE scaling — each a tiny random checkpoint
(`tests/architectures.py`): in vLLM, greedy tokens and logprobs equal the HF-transformers reference that
prunes its cache to the policy's keep set, and the block pool gets the freed blocks back; a model with
sliding-window attention is refused at start with the flag that serves it anyway."""

from __future__ import annotations

from pathlib import Path

import pytest

from compression.reference import generate_with_eviction
from compression.registry import create
from compression.vllm_integration.version import UnsupportedEngineError
from tests.architectures import ARCHITECTURES, mistral, save_tiny_model
from tests.kv_engine import BLOCK_SIZE, engine, engine_kept, generate, random_prompt, sampling, scheduler_of

pytestmark = pytest.mark.integration
NEW_TOKENS, RATIO = 24, 0.5
POLICIES = ["snapkv", "knorm", "chunkkv"]  # window attention, key norms, whole chunks voted by the layers
PROMPT_LENGTHS = [150, 233]  # not block multiples; longer than Phi-3's short-factor window (long factors)
LOGPROB_TOLERANCE = 1e-3


@pytest.mark.parametrize("architecture", list(ARCHITECTURES))
def test_eviction_equals_the_hf_reference_and_frees_blocks(
    architecture: str, tmp_path: Path, default_model_path: Path
) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    model_dir = save_tiny_model(tmp_path / architecture, ARCHITECTURES[architecture](), default_model_path)
    prompts = [random_prompt(7 * i + len(architecture), n) for i, n in enumerate(PROMPT_LENGTHS)]
    requests = [(policy, prompt) for policy in POLICIES for prompt in prompts]
    with engine(model_dir) as llm:
        pool = scheduler_of(llm).kv_cache_manager.block_pool
        free_at_start = pool.get_num_free_blocks()
        outputs = generate(
            llm, [p for _, p in requests], [sampling(NEW_TOKENS, policy, RATIO) for policy, _ in requests]
        )
        assert pool.get_num_free_blocks() == free_at_start  # every block, kept or freed early, is back
    reference = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    layers = reference.config.num_hidden_layers
    changed = 0
    for (policy, prompt), got in zip(requests, outputs, strict=True):
        kept = engine_kept(len(prompt), create(policy), RATIO)
        expected = generate_with_eviction(
            reference, prompt, create(policy), RATIO, NEW_TOKENS, [kept] * layers
        )
        assert got.tokens == expected.tokens, f"{architecture}, {policy}, {len(prompt)} tokens"
        gap = max(abs(a - b) for a, b in zip(got.logprobs, expected.logprobs, strict=True))
        assert gap < LOGPROB_TOLERANCE, f"{architecture}, {policy}: logprobs {gap:.2e} apart"
        assert got.kv_stats is not None
        assert (got.kv_stats["tokens_after"], got.kv_stats["blocks_after"]) == (kept, -(-kept // BLOCK_SIZE))
        assert got.kv_stats["blocks_before"] == -(-len(prompt) // BLOCK_SIZE)
        full = generate_with_eviction(reference, prompt, create("none"), 0.0, NEW_TOKENS)
        changed += full.tokens != got.tokens
    assert changed, f"{architecture}: evicting half the prompt never changed the output"


def test_a_sliding_window_model_is_refused_with_the_flag_that_serves_it(
    tmp_path: Path, default_model_path: Path
) -> None:
    model_dir = save_tiny_model(tmp_path / "mistral-swa", mistral(sliding_window=64), default_model_path)
    with pytest.raises(Exception) as refused, engine(model_dir):
        pass
    chain = [refused.value, *iter_causes(refused.value)]
    message = " | ".join(str(error) for error in chain)
    assert any(isinstance(error, UnsupportedEngineError) for error in chain) or "sliding window" in message
    assert "--no-kv-eviction" in message and "SlidingWindowSpec" in message


def iter_causes(error: BaseException) -> list[BaseException]:
    causes = []
    while error.__cause__ is not None or error.__context__ is not None:
        error = error.__cause__ or error.__context__  # type: ignore[assignment]
        causes.append(error)
    return causes
