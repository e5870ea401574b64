"""KV eviction in bfloat16 on CPUs with AMX, where vLLM packs the cache in its 'amx' layout: on the real
bundled model, against the HF-transformers reference in bfloat16.

bfloat16 kernels round differently in vLLM and in transformers, so greedy tokens part after a while even
without eviction, and scores near the keep threshold can swap a token or two. What must hold instead:
- each layer and KV head keeps (nearly) the tokens the reference keeps — a misread layout keeps about half;
- following vLLM's tokens, the reference that pruned its cache the same way gives them the logprobs vLLM
  gave (teacher forcing), far closer than the uncompressed reference does;
- the blocks held are what the kept tokens fill.
Skipped on CPUs without AMX (vLLM then uses the 'vec' layout, tested in float32 elsewhere)."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

import pytest
import torch

from bench.corpus import towns_text
from compression.reference import generate_with_eviction
from compression.registry import create
from tests.kv_engine import BLOCK_SIZE, engine, engine_kept, generate, sampling

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        not torch.cpu._is_amx_tile_supported(),
        reason="vLLM serves bfloat16 in its 'amx' layout only with AMX",
    ),
]
NEW_TOKENS, RATIO = 32, 0.75
POLICIES = ["snapkv", "knorm", "streaming_llm"]
MIN_KEEP_OVERLAP = 0.95  # measured 0.98-1.0 per layer and head
MAX_MEAN_LOGPROB_GAP = 0.1  # measured 0.03-0.06; the uncompressed reference is 0.39-0.68 away


def mean_logprob_gap(got: list[float], expected: list[float]) -> float:
    return statistics.fmean(abs(a - b) for a, b in zip(got, expected, strict=True))


@pytest.fixture(scope="module")
def prompt(default_model_path: Path) -> list[int]:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(default_model_path)
    question = "Which town holds its festival at midsummer night, and what is it known for?"
    messages = [{"role": "user", "content": f"{towns_text()}\n\n{question}"}]
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return tokenizer(text, add_special_tokens=False).input_ids


def test_bfloat16_eviction_keeps_what_the_bfloat16_reference_keeps(
    default_model_path: Path, prompt: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    from transformers import LlamaForCausalLM
    from vllm.v1.attention.backends.cpu_attn import _get_attn_isa

    import compression.vllm_integration.runner as worker

    assert _get_attn_isa(torch.bfloat16, BLOCK_SIZE, head_size=64) == "amx"  # what this test is about

    engine_keeps: list[torch.Tensor] = []
    original = worker.keep_indices

    def recording_keep_indices(*args: Any, **kwargs: Any) -> torch.Tensor:
        engine_keeps.append(original(*args, **kwargs).clone())
        return engine_keeps[-1]

    monkeypatch.setattr(worker, "keep_indices", recording_keep_indices)
    outputs, keeps = [], []
    with engine(default_model_path, max_model_len=2048, dtype="bfloat16") as llm:
        for policy in POLICIES:  # one at a time, so the recorded keep sets are this request's
            engine_keeps.clear()
            outputs.append(generate(llm, [prompt], sampling(NEW_TOKENS, policy, RATIO))[0])
            keeps.append(list(engine_keeps))
    model = LlamaForCausalLM.from_pretrained(default_model_path, dtype=torch.bfloat16).eval()
    layers = model.config.num_hidden_layers
    for policy, got, engine_kept_sets in zip(POLICIES, outputs, keeps, strict=True):
        kept = engine_kept(len(prompt), create(policy), RATIO)
        assert got.kv_stats is not None and got.kv_stats["tokens_after"] == kept
        assert got.kv_stats["blocks_after"] == -(-kept // BLOCK_SIZE) < got.kv_stats["blocks_before"]
        same = generate_with_eviction(
            model, prompt, create(policy), RATIO, NEW_TOKENS, [kept] * layers, forced=got.tokens
        )
        assert len(engine_kept_sets) == layers
        for layer, (ours, theirs) in enumerate(zip(engine_kept_sets, same.kept, strict=True)):
            for head in range(ours.shape[0]):
                overlap = len(set(ours[head].tolist()) & set(theirs[head].tolist())) / ours.shape[1]
                assert overlap >= MIN_KEEP_OVERLAP, (
                    f"{policy}: layer {layer} head {head} overlap {overlap:.2f}"
                )
        assert mean_logprob_gap(got.logprobs, same.logprobs) < MAX_MEAN_LOGPROB_GAP, policy
        uncompressed = generate_with_eviction(
            model, prompt, create("none"), 0.0, NEW_TOKENS, forced=got.tokens
        )
        assert mean_logprob_gap(got.logprobs, uncompressed.logprobs) > 2 * MAX_MEAN_LOGPROB_GAP, (
            f"{policy}: the check cannot tell eviction from none"
        )
