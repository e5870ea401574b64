"""LoRA fine-tuning through TRL's SFTTrainer (PEFT), with the loss on the answer tokens only.

Examples are chat conversations (a user turn with the long context and question, an assistant turn with
the answer), given to TRL as conversational prompt-completion pairs, so only completion tokens count in
the loss. fp32 on CPU, bf16 on a CUDA GPU; gradient checkpointing; checkpoints under `<out>/checkpoints`
(an interrupted run resumes from the last one); the result is a vLLM-loadable adapter folder with a small
JSON card (`lcrag_adapter.json`: base model, recipe, steps, losses, speed, evals).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CARD_NAME = "lcrag_adapter.json"
LORA_TARGETS = "all-linear"  # every linear layer of the blocks (not the LM head)


@dataclass(frozen=True)
class TrainConfig:
    base_model: Path
    out_dir: Path
    steps: int
    recipe: str
    recipe_options: dict[str, Any] = field(default_factory=dict)
    learning_rate: float = 2e-4
    lora_rank: int = 8
    lora_alpha: int = 16
    batch_size: int = 1
    gradient_accumulation: int = 1
    max_length: int = 8192
    seed: int = 0

    def __post_init__(self) -> None:
        if self.steps <= 0:
            raise ValueError(f"steps must be at least 1 (got {self.steps}).")
        if not (self.base_model / "config.json").is_file():
            raise ValueError(f"{self.base_model} is not a model folder (no config.json).")


@dataclass(frozen=True)
class TrainResult:
    adapter_dir: Path
    steps: int
    losses: list[float]  # per logged step
    tokens: int
    seconds: float
    device: str

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds if self.seconds else 0.0


def prompt_completion(messages: Sequence[dict[str, str]]) -> dict[str, list[dict[str, str]]]:
    """A chat example as TRL's conversational prompt-completion pair (the last turn is the answer)."""
    if not messages or messages[-1]["role"] != "assistant":
        raise ValueError("Each training example must end with the assistant's answer.")
    return {"prompt": list(messages[:-1]), "completion": [messages[-1]]}


def train(examples: Sequence[Sequence[dict[str, str]]], config: TrainConfig) -> TrainResult:
    """Train a LoRA adapter on chat `examples` and write it (with its card) to `config.out_dir`."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    if not examples:
        raise ValueError("No training examples: the recipe produced nothing.")
    on_gpu = torch.cuda.is_available()
    dtype = torch.bfloat16 if on_gpu else torch.float32
    tokenizer = AutoTokenizer.from_pretrained(config.base_model)
    model = AutoModelForCausalLM.from_pretrained(config.base_model, dtype=dtype)
    dataset = Dataset.from_list([prompt_completion(messages) for messages in examples])
    checkpoints = config.out_dir / "checkpoints"
    arguments = SFTConfig(
        output_dir=str(checkpoints),
        max_steps=config.steps,
        per_device_train_batch_size=config.batch_size,
        gradient_accumulation_steps=config.gradient_accumulation,
        learning_rate=config.learning_rate,
        lr_scheduler_type="constant",
        logging_steps=1,
        save_steps=max(1, config.steps // 4),
        save_total_limit=1,
        gradient_checkpointing=True,
        bf16=on_gpu,
        use_cpu=not on_gpu,
        max_length=config.max_length,
        completion_only_loss=True,
        report_to="none",
        seed=config.seed,
        dataloader_num_workers=0,
    )
    lora = LoraConfig(
        r=config.lora_rank,
        lora_alpha=config.lora_alpha,
        lora_dropout=0.0,
        target_modules=LORA_TARGETS,
        task_type="CAUSAL_LM",
    )
    trainer = SFTTrainer(
        model=model, args=arguments, train_dataset=dataset, processing_class=tokenizer, peft_config=lora
    )
    resume = any(checkpoints.glob("checkpoint-*"))
    started = time.perf_counter()
    trainer.train(resume_from_checkpoint=True if resume else None)
    seconds = time.perf_counter() - started
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    tokens = _tokens_seen(trainer, config)
    config.out_dir.mkdir(parents=True, exist_ok=True)
    trainer.model.save_pretrained(config.out_dir)
    tokenizer.save_pretrained(config.out_dir)
    result = TrainResult(config.out_dir, config.steps, losses, tokens, seconds, "cuda" if on_gpu else "cpu")
    write_card(config, result)
    return result


def _tokens_seen(trainer: Any, config: TrainConfig) -> int:
    """Tokens the run trained on: each step's batch of tokenized examples, cycling through the dataset."""
    lengths = [len(ids) for ids in trainer.train_dataset["input_ids"]]
    per_step = config.batch_size * config.gradient_accumulation
    return sum(lengths[i % len(lengths)] for i in range(config.steps * per_step))


def write_card(config: TrainConfig, result: TrainResult, evals: dict[str, Any] | None = None) -> Path:
    """The adapter's card: what it was trained from and how, and evals when given (merged into any old)."""
    path = config.out_dir / CARD_NAME
    card = json.loads(path.read_text()) if path.is_file() else {}
    card.update(
        {
            "base_model": str(config.base_model),
            "recipe": config.recipe,
            "recipe_options": config.recipe_options,
            "steps": result.steps,
            "lora_rank": config.lora_rank,
            "learning_rate": config.learning_rate,
            "device": result.device,
            "loss_first": result.losses[0] if result.losses else math.nan,
            "loss_last": result.losses[-1] if result.losses else math.nan,
            "train_tokens": result.tokens,
            "train_tokens_per_s": round(result.tokens_per_s, 1),
        }
    )
    if evals:
        card.setdefault("evals", {}).update(evals)
    path.write_text(json.dumps(card, indent=1, default=str))
    return path


def read_card(adapter_dir: Path) -> dict[str, Any]:
    path = adapter_dir / CARD_NAME
    return json.loads(path.read_text()) if path.is_file() else {}
