"""KV eviction on the real bundled model (SmolLM2-135M-Instruct: 30 layers, 3 KV heads) in vLLM equals the
HF-transformers reference that prunes its cache to the same keep set, on a real-prose chat prompt."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from compression.reference import generate_with_eviction
from compression.registry import create
from tests.documents_text import towns_text
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
