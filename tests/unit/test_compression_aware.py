"""Compression-aware training masks: a training forward with simulated eviction gives, at every answer
position, the logprobs of the independent reference that prunes a DynamicCache to the policy's keep set
and decodes with logical positions; its keep sets equal the reference's."""

from __future__ import annotations

import copy
import random
from pathlib import Path

import pytest
import torch

from compression.reference import generate_with_eviction
from compression.registry import create
from compression.spec import KVSpec
from finetune.compression_aware import enable, parse_compression, prompt_length

NEW_TOKENS = 12


@pytest.fixture(scope="module")
def model(peaky_model_dir: Path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(peaky_model_dir, dtype=torch.float32)


def prompt_ids(seed: int, length: int) -> list[int]:
    rng = random.Random(seed)
    return [rng.randrange(100, 40000) for _ in range(length)]


@pytest.mark.parametrize(("policy", "ratio"), [("snapkv", 0.5), ("knorm", 0.75), ("streaming_llm", 0.5),
                                               ("h2o", 0.5), ("tova", 0.6)])  # fmt: skip
def test_masked_training_forward_equals_the_pruned_cache_reference(model, policy: str, ratio: float) -> None:
    prompt = prompt_ids(len(policy), 90)
    reference = generate_with_eviction(model, prompt, create(policy), ratio, NEW_TOKENS)
    full = generate_with_eviction(model, prompt, create("none"), 0.0, NEW_TOKENS)
    assert reference.tokens != full.tokens, "eviction changed nothing: the comparison could not fail"

    trained = copy.deepcopy(model)
    state = enable(trained, KVSpec(policy=policy, ratio=ratio))
    ids = torch.tensor([prompt + reference.tokens])
    labels = ids.clone()
    labels[0, : len(prompt)] = -100
    with torch.no_grad():
        logits = trained(input_ids=ids, labels=labels).logits[0]
    assert state.prompt_lengths == [len(prompt)]
    answer_rows = logits[len(prompt) - 1 : -1].log_softmax(-1)
    got = answer_rows.gather(1, torch.tensor(reference.tokens).unsqueeze(1)).squeeze(1)
    assert answer_rows.argmax(-1).tolist() == reference.tokens
    assert torch.allclose(got, torch.tensor(reference.logprobs), atol=1e-4), (got, reference.logprobs)
    for layer, kept in enumerate(reference.kept):
        assert torch.equal(state.kept[layer][0], kept), f"layer {layer}"


def test_prompt_rows_are_untouched_and_padding_rows_are_ignored(model) -> None:
    prompt, answer = prompt_ids(1, 60), prompt_ids(2, 8)
    with torch.no_grad():
        plain = model(input_ids=torch.tensor([prompt + answer])).logits[0]
    trained = copy.deepcopy(model)
    state = enable(trained, KVSpec(policy="snapkv", ratio=0.75))
    labels = torch.tensor([[-100] * len(prompt) + answer, [-100] * (len(prompt) + len(answer))])
    ids = torch.tensor([prompt + answer, prompt + answer])
    with torch.no_grad():
        masked = trained(input_ids=ids, labels=labels).logits
    assert state.prompt_lengths == [len(prompt), len(prompt) + len(answer)]
    assert torch.allclose(masked[0, : len(prompt)], plain[: len(prompt)], atol=1e-5)  # prefill rows: full
    answer_rows = masked[0, len(prompt) :]
    assert not torch.allclose(answer_rows, plain[len(prompt) :], atol=1e-3)  # answer rows: evicted
    assert torch.allclose(masked[1], plain, atol=1e-5)  # a row with no answer is plain causal attention
    assert prompt_length(torch.tensor([-100, -100, 5, 6])) == 2


@pytest.mark.parametrize(
    ("text", "phrase"),
    [
        ("snapkv", "POLICY-RATIO"),
        ("snapkv-1.5", "ratio in (0, 1)"),
        ("snapkv:0", "ratio in (0, 1)"),
        ("nope-0.5", "Unknown KV policy 'nope'"),
    ],
)
def test_bad_compression_flags_say_what_to_write(text: str, phrase: str) -> None:
    with pytest.raises(ValueError, match=phrase.replace("(", r"\(").replace(")", r"\)")):
        parse_compression(text)
    assert str(parse_compression("knorm-0.5")) == str(parse_compression("knorm:0.5")) == "knorm-0.5"
