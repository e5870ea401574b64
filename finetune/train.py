"""LoRA fine-tuning through TRL (PEFT): SFT with the loss on the answer tokens only, or GRPO with rewards.

Examples are chat conversations (a user turn with the long context and question, an assistant turn with
the answer). SFT gives them to TRL's SFTTrainer as conversational prompt-completion pairs, so only
completion tokens count in the loss; with `compression` set, the answer attends only to the prompt K/V
that eviction would keep (`finetune.compression_aware`). GRPO gives TRL's GRPOTrainer the prompts and the
caller's reward functions (the multidoc scorers). Precision (`precision_of`): bf16 on a CUDA GPU, bf16
autocast over fp32 weights on a CPU with AMX tiles (about twice as fast there), fp32 elsewhere; gradient
checkpointing; checkpoints under `<out>/checkpoints` (an interrupted run resumes from the last one); the
result is a vLLM-loadable adapter folder with a small JSON card (`lcrag_adapter.json`: base model, recipe,
method, precision, steps, losses or rewards, speed, evals).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from compression.spec import KVSpec

CARD_NAME = "lcrag_adapter.json"
LORA_TARGETS = "all-linear"  # every linear layer of the blocks (not the LM head)
METHODS = ("sft", "grpo")
PRECISIONS = ("auto", "fp32", "bf16")  # auto: bf16 on a GPU or an AMX CPU, else fp32
RewardFunction = Callable[..., list[float]]  # TRL's signature: (prompts, completions, **columns) -> rewards


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
    method: str = "sft"
    compression: KVSpec | None = None  # SFT only: train against an evicted cache
    generations: int = 4  # GRPO: completions sampled per prompt
    max_completion_tokens: int = 128  # GRPO
    precision: str = "auto"  # one of PRECISIONS

    def __post_init__(self) -> None:
        if self.steps <= 0:
            raise ValueError(f"steps must be at least 1 (got {self.steps}).")
        check_precision(self.precision)
        check_method(self.method, self.compression)
        if not (self.base_model / "config.json").is_file():
            raise ValueError(f"{self.base_model} is not a model folder (no config.json).")


def check_method(method: str, compression: KVSpec | None) -> None:
    if method not in METHODS:
        raise ValueError(f"Unknown method {method!r}; available: {', '.join(METHODS)}.")
    if compression is not None and method != "sft":
        raise ValueError("--compression simulates eviction in SFT; use it with --method sft.")


def check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise ValueError(f"Unknown precision {precision!r}; available: {', '.join(PRECISIONS)}.")


def precision_of(requested: str, on_gpu: bool, amx: bool) -> str:
    """The precision a run trains in: `requested`, or for "auto" bf16 where the hardware multiplies bf16
    natively (a CUDA GPU, or a CPU with AMX tiles, where bf16 matmuls ran 1.8x fp32's speed), else fp32."""
    check_precision(requested)
    if requested != "auto":
        return requested
    return "bf16" if on_gpu or amx else "fp32"


@dataclass(frozen=True)
class TrainResult:
    adapter_dir: Path
    steps: int
    losses: list[float]  # per logged step (GRPO: its policy loss)
    tokens: int
    seconds: float
    device: str
    precision: str = "fp32"  # what `precision_of` chose
    rewards: list[float] = field(default_factory=list)  # GRPO: mean reward per logged step

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds if self.seconds else 0.0


def prompt_completion(messages: Sequence[dict[str, str]]) -> dict[str, list[dict[str, str]]]:
    """A chat example as TRL's conversational prompt-completion pair (the last turn is the answer)."""
    if not messages or messages[-1]["role"] != "assistant":
        raise ValueError("Each training example must end with the assistant's answer.")
    return {"prompt": list(messages[:-1]), "completion": [messages[-1]]}


def train(
    examples: Sequence[Sequence[dict[str, str]]],
    config: TrainConfig,
    rewards: Sequence[RewardFunction] = (),
) -> TrainResult:
    """Train a LoRA adapter on chat `examples` and write it (with its card) to `config.out_dir`.

    GRPO needs `rewards`; each gets the dataset column `example` (the index into `examples`) besides TRL's
    prompts and completions.
    """
    import torch
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not examples:
        raise ValueError("No training examples: the recipe produced nothing.")
    if config.method == "grpo" and not rewards:
        raise ValueError("GRPO needs reward functions (the multidoc recipe provides them).")
    on_gpu = torch.cuda.is_available()
    tokenizer = AutoTokenizer.from_pretrained(config.base_model)
    precision = precision_of(config.precision, on_gpu, torch.cpu._is_amx_tile_supported())
    # A GPU holds bf16 weights; a CPU keeps fp32 weights and multiplies in bf16 under autocast.
    dtype = torch.bfloat16 if on_gpu and precision == "bf16" else torch.float32
    model = AutoModelForCausalLM.from_pretrained(config.base_model, dtype=dtype, attn_implementation="sdpa")
    lora = LoraConfig(
        r=config.lora_rank,
        lora_alpha=config.lora_alpha,
        lora_dropout=0.0,
        target_modules=LORA_TARGETS,
        task_type="CAUSAL_LM",
    )
    checkpoints = config.out_dir / "checkpoints"
    common = dict(
        output_dir=str(checkpoints),
        max_steps=config.steps,
        learning_rate=config.learning_rate,
        lr_scheduler_type="constant",
        logging_steps=1,
        save_steps=max(1, config.steps // 4),
        save_total_limit=1,
        gradient_checkpointing=True,
        bf16=precision == "bf16",
        use_cpu=not on_gpu,
        report_to="none",
        seed=config.seed,
        dataloader_num_workers=0,
    )
    setup = _Setup(model, tokenizer, examples, config, lora, common, rewards)
    trainer = _grpo_trainer(setup) if config.method == "grpo" else _sft_trainer(setup)
    resume = last_checkpoint(config.out_dir)
    started = time.perf_counter()
    trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    seconds = time.perf_counter() - started
    history = trainer.state.log_history
    config.out_dir.mkdir(parents=True, exist_ok=True)
    trainer.model.save_pretrained(config.out_dir)
    tokenizer.save_pretrained(config.out_dir)
    result = TrainResult(
        config.out_dir,
        config.steps,
        losses=[entry["loss"] for entry in history if "loss" in entry],
        tokens=_tokens_seen(trainer, config),
        seconds=seconds,
        device="cuda" if on_gpu else "cpu",
        precision=precision,
        rewards=[entry["reward"] for entry in history if "reward" in entry],
    )
    write_card(config, result)
    return result


def last_checkpoint(out_dir: Path) -> Path | None:
    """The newest checkpoint under `out_dir` whose save finished (the trainer writes `trainer_state.json`
    last); a checkpoint a killed run left half-written is removed."""
    import shutil

    found = sorted((out_dir / "checkpoints").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]))
    complete = [path for path in found if (path / "trainer_state.json").is_file()]
    for partial in (path for path in found if path not in complete):
        shutil.rmtree(partial)
    return complete[-1] if complete else None


@dataclass(frozen=True)
class _Setup:
    """What both trainers are built from."""

    model: Any
    tokenizer: Any
    examples: Sequence[Sequence[dict[str, str]]]
    config: TrainConfig
    lora: Any
    arguments: dict[str, Any]  # TrainingArguments shared by SFT and GRPO
    rewards: Sequence[RewardFunction]


def _sft_trainer(setup: _Setup) -> Any:
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    config = setup.config
    arguments = SFTConfig(
        **setup.arguments,
        per_device_train_batch_size=config.batch_size,
        gradient_accumulation_steps=config.gradient_accumulation,
        max_length=config.max_length,
        completion_only_loss=True,
    )
    dataset = Dataset.from_list([prompt_completion(messages) for messages in setup.examples])
    trainer = SFTTrainer(
        model=setup.model,
        args=arguments,
        train_dataset=dataset,
        processing_class=setup.tokenizer,
        peft_config=setup.lora,
    )
    if config.compression is not None:
        from finetune.compression_aware import enable

        enable(trainer.model, config.compression)
    return trainer


def _grpo_trainer(setup: _Setup) -> Any:
    """One prompt per step, `generations` sampled completions scored by the rewards (group-relative)."""
    import warnings

    from datasets import Dataset

    # TRL checks the installed vLLM's version on import; its GRPO here generates with transformers instead.
    warnings.filterwarnings("ignore", message="TRL currently supports vLLM versions", category=UserWarning)
    from trl import GRPOConfig, GRPOTrainer

    config = setup.config
    arguments = GRPOConfig(
        **setup.arguments,
        per_device_train_batch_size=config.generations,
        gradient_accumulation_steps=1,
        num_generations=config.generations,
        max_completion_length=config.max_completion_tokens,
        log_completions=False,
    )
    prompts = [prompt_completion(messages)["prompt"] for messages in setup.examples]
    dataset = Dataset.from_list([{"prompt": prompt, "example": i} for i, prompt in enumerate(prompts)])
    return GRPOTrainer(
        model=setup.model,
        reward_funcs=list(setup.rewards),
        args=arguments,
        train_dataset=dataset,
        processing_class=setup.tokenizer,
        peft_config=setup.lora,
    )


def _tokens_seen(trainer: Any, config: TrainConfig) -> int:
    """Tokens the run trained on. SFT: each step's batch of tokenized examples, cycling through the
    dataset. GRPO: the tokens TRL counted (prompts and sampled completions)."""
    if config.method == "grpo":
        return int(trainer.state.num_input_tokens_seen)
    lengths = [len(ids) for ids in trainer.train_dataset["input_ids"]]
    per_step = config.batch_size * config.gradient_accumulation
    return sum(lengths[i % len(lengths)] for i in range(config.steps * per_step))


def write_card(config: TrainConfig, result: TrainResult) -> Path:
    """The adapter's card: what it was trained from and how (evals already there are kept)."""
    path = config.out_dir / CARD_NAME
    card = json.loads(path.read_text()) if path.is_file() else {}
    card.update(
        {
            "base_model": str(config.base_model),
            "recipe": config.recipe,
            "recipe_options": config.recipe_options,
            "method": config.method,
            "compression": str(config.compression) if config.compression else None,
            "steps": result.steps,
            "lora_rank": config.lora_rank,
            "learning_rate": config.learning_rate,
            "device": result.device,
            "precision": result.precision,
            "loss_first": result.losses[0] if result.losses else math.nan,
            "loss_last": result.losses[-1] if result.losses else math.nan,
            "train_tokens": result.tokens,
            "train_tokens_per_s": round(result.tokens_per_s, 1),
            "reward_first": result.rewards[0] if result.rewards else None,
            "reward_last": result.rewards[-1] if result.rewards else None,
        }
    )
    path.write_text(json.dumps(card, indent=1, default=str))
    return path


def add_evals(adapter_dir: Path, evals: dict[str, Any]) -> None:
    """Merge eval results (e.g. accuracy before/after) into the adapter's card."""
    path = adapter_dir / CARD_NAME
    card = read_card(adapter_dir)
    card.setdefault("evals", {}).update(evals)
    path.write_text(json.dumps(card, indent=1, default=str))


def read_card(adapter_dir: Path) -> dict[str, Any]:
    path = adapter_dir / CARD_NAME
    return json.loads(path.read_text()) if path.is_file() else {}
