"""LoRA training on the tiny model lowers the answer loss, writes a card, resumes, refuses bad input; the
adapter loads in vLLM (CPU) and changes its logits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from finetune.data.kv_retrieval import KVRetrievalConfig, examples
from finetune.train import CARD_NAME, TrainConfig, TrainResult, prompt_completion, train

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def data(tiny_model_dir: Path) -> list[list[dict[str, str]]]:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    config = KVRetrievalConfig(target_tokens=200, digits=4, keys_per_dictionary=2)
    return [item.messages for item in examples(tokenizer, config, 4, seed=5)]


def answer_loss(model_dir: Path, adapter: Path | None, data: list[list[dict[str, str]]]) -> float:
    """Mean loss of the answer tokens (what training minimises), computed independently of TRL."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    if adapter is not None:
        model = PeftModel.from_pretrained(model, adapter)
    losses = []
    with torch.no_grad():
        for messages in data:
            prompt = tokenizer.apply_chat_template(messages[:-1], add_generation_prompt=True, tokenize=False)
            full = tokenizer.apply_chat_template(messages, tokenize=False)
            prompt_ids = tokenizer(prompt, add_special_tokens=False).input_ids
            ids = torch.tensor([tokenizer(full, add_special_tokens=False).input_ids])
            labels = ids.clone()
            labels[0, : len(prompt_ids)] = -100
            losses.append(float(model(input_ids=ids, labels=labels).loss))
    return sum(losses) / len(losses)


@pytest.fixture(scope="module")
def trained(tiny_model_dir: Path, data: list[list[dict[str, str]]], tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("adapter")
    config = TrainConfig(
        tiny_model_dir, out, steps=12, recipe="kv_retrieval", learning_rate=3e-2, precision="fp32"
    )
    return train(data, config)


def test_training_lowers_the_answer_loss_and_writes_an_adapter_with_its_card(
    tiny_model_dir: Path, data: list[list[dict[str, str]]], trained: TrainResult
) -> None:
    out = trained.adapter_dir
    assert (out / "adapter_config.json").is_file() and (out / "adapter_model.safetensors").is_file()
    before, after = answer_loss(tiny_model_dir, None, data), answer_loss(tiny_model_dir, out, data)
    assert after < before - 0.25, (before, after)  # nats per answer token; 10.73 -> 10.27 measured
    card = json.loads((out / CARD_NAME).read_text())
    assert card["recipe"] == "kv_retrieval" and card["steps"] == 12 and card["train_tokens"] == trained.tokens
    assert card["precision"] == "fp32"
    assert trained.tokens_per_s > 0 and len(trained.losses) == 12


def test_the_adapter_loads_in_vllm_and_changes_its_output(
    tiny_model_dir: Path, data: list[list[dict[str, str]]], trained: TrainResult
) -> None:
    from vllm.lora.request import LoRARequest

    from compression.vllm_integration.offline import greedy, offline_engine

    prompt = data[0][0]["content"]
    with offline_engine(tiny_model_dir, enable_lora=True, max_lora_rank=8, max_model_len=512) as llm:
        base = llm.generate([prompt], greedy(8), use_tqdm=False)[0].outputs[0]
        adapter = LoRARequest("kv", 1, str(trained.adapter_dir))
        tuned = llm.generate([prompt], greedy(8), lora_request=adapter, use_tqdm=False)[0].outputs[0]
    base_logprobs = [next(iter(step.values())).logprob for step in base.logprobs]
    tuned_logprobs = [next(iter(step.values())).logprob for step in tuned.logprobs]
    assert max(abs(a - b) for a, b in zip(base_logprobs, tuned_logprobs, strict=True)) > 0.05


def test_bf16_training_on_cpu_follows_the_fp32_run_and_says_so_on_its_card(
    tiny_model_dir: Path, data: list[list[dict[str, str]]], trained: TrainResult, tmp_path: Path
) -> None:
    """bf16 autocast over fp32 weights (what `auto` picks on a CPU with AMX) against the fp32 run above: the
    same first batch gives a nearly equal but not identical loss (the matmuls did run in bf16), and the
    adapter learns as much."""
    config = TrainConfig(
        tiny_model_dir,
        tmp_path / "bf16",
        steps=12,
        recipe="kv_retrieval",
        learning_rate=3e-2,
        precision="bf16",
    )
    result = train(data, config)
    first, reference = result.losses[0], trained.losses[0]
    assert first != reference and abs(first - reference) < 0.02 * reference, (first, reference)
    before, after = (
        answer_loss(tiny_model_dir, None, data),
        answer_loss(tiny_model_dir, result.adapter_dir, data),
    )
    assert after < before - 0.25, (before, after)
    assert json.loads((result.adapter_dir / CARD_NAME).read_text())["precision"] == "bf16"


def test_an_interrupted_run_resumes_from_its_checkpoint(
    tiny_model_dir: Path, data: list[list[dict[str, str]]], tmp_path: Path
) -> None:
    out = tmp_path / "resumed"
    train(data, TrainConfig(tiny_model_dir, out, steps=4, recipe="kv_retrieval"))
    assert any((out / "checkpoints").glob("checkpoint-*"))
    result = train(data, TrainConfig(tiny_model_dir, out, steps=6, recipe="kv_retrieval"))
    assert len(result.losses) == 6  # 4 from the first run's state, 2 new


def test_bad_input_is_refused_with_the_reason(tiny_model_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="steps must be at least 1"):
        TrainConfig(tiny_model_dir, tmp_path, steps=0, recipe="kv_retrieval")
    with pytest.raises(ValueError, match=r"no config\.json"):
        TrainConfig(tmp_path, tmp_path, steps=1, recipe="kv_retrieval")
    with pytest.raises(ValueError, match="end with the assistant"):
        prompt_completion([{"role": "user", "content": "hi"}])
    with pytest.raises(ValueError, match="Unknown precision 'fp16'"):
        TrainConfig(tiny_model_dir, tmp_path, steps=1, recipe="kv_retrieval", precision="fp16")
    with pytest.raises(ValueError, match="No training examples"):
        train([], TrainConfig(tiny_model_dir, tmp_path, steps=1, recipe="kv_retrieval"))
