"""KV eviction on the real bundled model (SmolLM2-135M-Instruct: 30 layers, 3 KV heads) in vLLM equals the
HF-transformers reference that prunes its cache to the same keep set, on a real-prose chat prompt."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from bench.corpus import towns_text
from compression.reference import generate_with_eviction
from compression.registry import create
from compression.spec import KVSpec
from tests.kv_engine import BLOCK_SIZE, engine, engine_kept, generate, sampling

pytestmark = pytest.mark.integration
NEW_TOKENS = 32


def test_snapkv_and_chunkkv_on_the_default_model_equal_the_hf_reference(default_model_path: Path) -> None:
    """chunkkv also checks the layers' shared vote (compaction after the whole forward pass) on 30 layers."""
    from transformers import AutoTokenizer, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(default_model_path)
    question = "Which town holds its festival at midsummer night, and what is it known for?"
    messages = [{"role": "user", "content": f"{towns_text()}\n\n{question}"}]
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    prompt = tokenizer(text, add_special_tokens=False).input_ids
    policies = ["snapkv", "chunkkv"]
    with engine(default_model_path, max_model_len=2048) as llm:
        outputs = generate(llm, [prompt] * len(policies), [sampling(NEW_TOKENS, p, 0.5) for p in policies])
    model = LlamaForCausalLM.from_pretrained(default_model_path, dtype=torch.float32).eval()
    for policy, got in zip(policies, outputs, strict=True):
        kept = engine_kept(len(prompt), create(policy), 0.5, block_size=BLOCK_SIZE)
        budgets = [kept] * model.config.num_hidden_layers
        expected = generate_with_eviction(model, prompt, create(policy), 0.5, NEW_TOKENS, budgets)
        assert got.tokens == expected.tokens, policy
        assert max(abs(a - b) for a, b in zip(got.logprobs, expected.logprobs, strict=True)) < 1e-2, policy
        assert got.kv_stats is not None and got.kv_stats["tokens_before"] == len(prompt) > 400


def test_a_kvzip_context_cache_on_the_default_model_equals_the_hf_reference(default_model_path: Path) -> None:
    """The whole path on 30 layers: reconstruction passes, the build, two questions adopting the cache."""
    from transformers import AutoTokenizer, LlamaForCausalLM

    from compression.policies.base import cached_tokens
    from compression.reconstruction import reconstruction_passes
    from compression.reference import generate_with_context_cache
    from compression.vllm_integration.offline import build_context_cache
    from rag.context import LcDocument, context_token_ids, lc_messages, lc_turn, prompt_token_ids

    tokenizer = AutoTokenizer.from_pretrained(default_model_path)
    documents = [LcDocument("towns", "towns.txt", towns_text())]
    questions = ["Which town holds its festival at midsummer night?", "What is Brisk known for?"]
    prompts = [prompt_token_ids(tokenizer, lc_messages(q, documents)) for q in questions]
    context = context_token_ids(tokenizer, lc_messages(questions[0], documents), lc_turn(questions[0]))
    assert context is not None and len(context) > 300
    with engine(default_model_path, max_model_len=2048) as llm:
        stats = build_context_cache(llm, tokenizer, context, KVSpec.parse("kvzip-0.75"), label="towns")
        params = cache_sampling(len(context))
        outputs = [generate(llm, [prompt], params)[0] for prompt in prompts]
    assert stats is not None and stats["cache"] == "built"
    assert [out.kv_stats["cache"] for out in outputs] == ["hit", "hit"]
    model = LlamaForCausalLM.from_pretrained(default_model_path, dtype=torch.float32).eval()
    scorer = create("kvzip")
    keep = cached_tokens(len(context), 0.75, scorer.must_keep_count(len(context)), BLOCK_SIZE)
    passes = reconstruction_passes(context, tokenizer, scorer.repeat, 2048)
    for prompt, got in zip(prompts, outputs, strict=True):
        suffix = prompt[len(context) :]
        expected = generate_with_context_cache(model, context, suffix, scorer, keep, NEW_TOKENS, passes)
        assert got.tokens == expected.tokens
        assert max(abs(a - b) for a, b in zip(got.logprobs, expected.logprobs, strict=True)) < 1e-2


def cache_sampling(context_tokens: int) -> object:
    from vllm import SamplingParams

    extra = KVSpec.parse("kvzip-0.75").task(context_tokens, "towns").extra_args()
    return SamplingParams(max_tokens=NEW_TOKENS, temperature=0, logprobs=0, ignore_eos=True, extra_args=extra)
