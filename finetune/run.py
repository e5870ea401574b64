"""`lcrag finetune`: build a recipe's examples, train a LoRA adapter on them, save it under the data dir."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from finetune.train import TrainConfig, TrainResult, train

RECIPES = ("kv_retrieval", "in2")
NEEDS_COLLECTION = ("in2",)


@dataclass(frozen=True)
class FinetuneRequest:
    recipe: str
    base_model: Path
    adapter_dir: Path
    steps: int
    examples: int = 64
    context_tokens: int = 2048
    learning_rate: float = 2e-4
    seed: int = 0
    documents: list[tuple[str, str]] | None = None  # (name, text) of the collection, for in2

    def check(self) -> None:
        """Refuse what cannot work before any model is loaded, saying what to do instead."""
        if self.recipe not in RECIPES:
            raise ValueError(f"Unknown recipe {self.recipe!r}; available: {', '.join(RECIPES)}.")
        if self.steps <= 0 or self.examples <= 0:
            raise ValueError("--steps and --examples must be at least 1.")
        if self.recipe in NEEDS_COLLECTION and not self.documents:
            raise ValueError(
                f"Recipe {self.recipe!r} builds questions from your documents: pass --collection with a "
                "collection that has documents."
            )
        if self.adapter_dir.exists():
            raise ValueError(
                f"An adapter named {self.adapter_dir.name!r} already exists in {self.adapter_dir.parent}; "
                "choose another --out or delete that folder."
            )


def build_examples(request: FinetuneRequest, tokenizer: Any) -> list[list[dict[str, str]]]:
    if request.recipe == "kv_retrieval":
        from finetune.data.kv_retrieval import KVRetrievalConfig, examples

        config = KVRetrievalConfig(target_tokens=request.context_tokens)
        return [item.messages for item in examples(tokenizer, config, request.examples, request.seed)]
    from finetune.data.in2 import In2Config, example, segments_of

    in2 = In2Config(target_tokens=request.context_tokens)
    segments = segments_of(request.documents or [], tokenizer, in2.segment_tokens)
    return [example(segments, tokenizer, in2, request.seed, i).messages for i in range(request.examples)]


def finetune(request: FinetuneRequest) -> TrainResult:
    from transformers import AutoTokenizer

    request.check()
    tokenizer = AutoTokenizer.from_pretrained(request.base_model)
    data = build_examples(request, tokenizer)
    options = {"examples": request.examples, "context_tokens": request.context_tokens, "seed": request.seed}
    config = TrainConfig(
        request.base_model,
        request.adapter_dir,
        request.steps,
        request.recipe,
        options,
        learning_rate=request.learning_rate,
        max_length=request.context_tokens + 256,
    )
    return train(data, config)
