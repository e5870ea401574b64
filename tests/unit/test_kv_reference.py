"""The HF eviction reference, checked two independent ways on a tiny random Llama:
- keeping everything, it decodes exactly what `model.generate` decodes;
- with StreamingLLM (one keep set for all heads and layers), pruning the cache gives the same logits as
  keeping the full cache and masking the evicted positions out of attention."""

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from compression.policies.simple import NoEviction, StreamingLLM
from compression.reference import generate_with_eviction

PROMPT = [5, 17, 99, 3, 42, 8, 61, 7, 13, 250, 31, 77, 2, 19, 64, 128, 9, 300, 45, 11, 6, 88, 140, 21]


@pytest.fixture(scope="module")
def model() -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=3,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=256,
    )  # fmt: skip
    return LlamaForCausalLM(config).eval()


def test_keeping_everything_is_plain_greedy_generation(model: LlamaForCausalLM) -> None:
    out = generate_with_eviction(model, PROMPT, NoEviction(), ratio=0.0, max_new_tokens=12)
    expected = model.generate(torch.tensor([PROMPT]), max_new_tokens=12, do_sample=False, min_new_tokens=12)
    assert out.tokens == expected[0, len(PROMPT) :].tolist()
    assert all(k.shape == (2, len(PROMPT)) for k in out.kept)


@torch.no_grad()
def masked_greedy(model: LlamaForCausalLM, evicted: list[int], steps: int) -> tuple[list[int], list[float]]:
    """Full cache, evicted prompt positions masked out of every decode step's attention."""
    n = len(PROMPT)
    out = model(input_ids=torch.tensor([PROMPT]), use_cache=True)
    cache, logits = out.past_key_values, out.logits[0, -1]
    tokens, logprobs = [], []
    for step in range(steps):
        token = int(logits.argmax())
        tokens.append(token)
        logprobs.append(float(logits.log_softmax(-1)[token]))
        mask = torch.ones(1, n + step + 1, dtype=torch.long)
        mask[0, evicted] = 0
        logits = model(input_ids=torch.tensor([[token]]), past_key_values=cache, attention_mask=mask,
                       position_ids=torch.tensor([[n + step]]), use_cache=True).logits[0, -1]  # fmt: skip
    return tokens, logprobs


def test_pruned_cache_equals_masking_the_evicted_tokens(model: LlamaForCausalLM) -> None:
    policy, ratio = StreamingLLM(sinks=2), 0.5
    out = generate_with_eviction(model, PROMPT, policy, ratio=ratio, max_new_tokens=10)
    kept = out.kept[0][0].tolist()
    assert kept == [0, 1, *range(len(PROMPT) - 10, len(PROMPT))]
    evicted = [p for p in range(len(PROMPT)) if p not in kept]
    tokens, logprobs = masked_greedy(model, evicted, steps=10)
    assert out.tokens == tokens
    assert torch.allclose(torch.tensor(out.logprobs), torch.tensor(logprobs), atol=1e-5)
    _, full_cache_logprobs = masked_greedy(model, [], steps=10)
    assert not torch.allclose(torch.tensor(full_cache_logprobs), torch.tensor(logprobs), atol=1e-3)
