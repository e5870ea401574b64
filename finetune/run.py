"""`lcrag finetune`: build a recipe's examples, train a LoRA adapter on them, save it under the data dir."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from compression.spec import KVSpec
from finetune.data.multidoc import TARGETS, CorpusChunk
from finetune.train import (
    RewardFunction,
    TrainConfig,
    TrainResult,
    check_method,
    check_precision,
    last_checkpoint,
    train,
)

RECIPES = ("kv_retrieval", "in2", "multidoc")
RUN_FILE = "lcrag_run.json"  # a run's options, checked by --resume
NEEDS_COLLECTION = ("in2", "multidoc")
GRPO_RECIPES = ("multidoc",)  # the recipes whose examples come with scoring functions


class Corpus(Protocol):
    """A collection's material (`finetune.collection.CollectionCorpus`, or anything shaped like it)."""

    def documents(self) -> list[tuple[str, str]]: ...

    def chunks(self) -> list[CorpusChunk]: ...

    def retrieve(self, query: str, k: int) -> list[str]: ...


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
    corpus: Corpus | None = None  # for the recipes that need a collection
    method: str = "sft"
    compression: KVSpec | None = None
    target: str = "ids+quotes"  # multidoc target variant
    resume: bool = False  # continue an interrupted run in adapter_dir from its last checkpoint
    precision: str = "auto"  # finetune.train.PRECISIONS

    def check(self) -> None:
        """Refuse what cannot work before any model is loaded, saying what to do instead."""
        if self.recipe not in RECIPES:
            raise ValueError(f"Unknown recipe {self.recipe!r}; available: {', '.join(RECIPES)}.")
        check_method(self.method, self.compression)
        check_precision(self.precision)
        if self.method == "grpo" and self.recipe not in GRPO_RECIPES:
            raise ValueError(
                f"--method grpo rewards come from the multidoc scorers; use --recipe multidoc "
                f"(not {self.recipe!r})."
            )
        if self.recipe == "multidoc" and self.target not in TARGETS:
            raise ValueError(f"Unknown --target {self.target!r}; choose one of {', '.join(TARGETS)}.")
        if self.steps <= 0 or self.examples <= 0:
            raise ValueError("--steps and --examples must be at least 1.")
        if self.recipe in NEEDS_COLLECTION and self.corpus is None:
            raise ValueError(
                f"Recipe {self.recipe!r} builds questions from your documents: pass --collection with a "
                "collection that has documents."
            )
        self._check_output()

    def run_settings(self) -> dict[str, Any]:
        """What a resumed run must share with the interrupted one (saved as `RUN_FILE` at the start)."""
        return {"recipe": self.recipe, "base_model": str(self.base_model), "steps": self.steps,
                "examples": self.examples, "context_tokens": self.context_tokens,
                "learning_rate": self.learning_rate, "seed": self.seed, "method": self.method,
                "compression": str(self.compression) if self.compression else None, "target": self.target,
                "holdout": getattr(self.corpus, "holdout_share", None)}  # fmt: skip

    def _check_output(self) -> None:
        """A new --out (or one a run left before its first checkpoint), or with `resume` an interrupted run
        of the same settings."""
        name, folder = self.adapter_dir.name, self.adapter_dir.parent
        if (self.adapter_dir / "adapter_config.json").is_file():
            raise ValueError(
                f"An adapter named {name!r} already exists in {folder}; choose another --out or delete that "
                "folder."
            )
        interrupted = last_checkpoint(self.adapter_dir) is not None
        if interrupted and not self.resume:
            raise ValueError(
                f"An interrupted run of {name!r} is in {self.adapter_dir}: continue it with --resume (same "
                "options), or delete that folder."
            )
        if self.resume and not interrupted:
            raise ValueError(f"Nothing to resume: {self.adapter_dir} holds no checkpoint; drop --resume.")
        saved = self.adapter_dir / RUN_FILE
        if self.resume and saved.is_file():
            before = json.loads(saved.read_text())
            changed = sorted(k for k, v in self.run_settings().items() if before.get(k) != v)
            if changed:
                raise ValueError(
                    f"--resume needs the interrupted run's options; these differ: {', '.join(changed)} "
                    f"(saved in {saved})."
                )


@dataclass(frozen=True)
class RecipeData:
    examples: list[list[dict[str, str]]]  # chat conversations, the answer last
    rewards: list[RewardFunction]  # for GRPO; empty when the recipe has no scorers


def build_examples(request: FinetuneRequest, tokenizer: Any) -> RecipeData:
    count, seed, tokens = request.examples, request.seed, request.context_tokens
    if request.recipe == "kv_retrieval":
        from finetune.data.kv_retrieval import KVRetrievalConfig, examples

        config = KVRetrievalConfig(target_tokens=tokens)
        return RecipeData([item.messages for item in examples(tokenizer, config, count, seed)], [])
    corpus = _require(request.corpus)
    if request.recipe == "multidoc":
        from finetune.data import multidoc

        settings = multidoc.MultidocConfig(target_tokens=tokens, target=request.target)
        items = multidoc.examples(corpus.chunks(), corpus.retrieve, tokenizer, settings, count, seed)
        return RecipeData([item.messages for item in items], multidoc.reward_functions(items))
    from finetune.data.in2 import In2Config, example, segments_of

    in2 = In2Config(target_tokens=tokens)
    segments = segments_of(corpus.documents(), tokenizer, in2.segment_tokens)
    return RecipeData([example(segments, tokenizer, in2, seed, i).messages for i in range(count)], [])


def finetune(request: FinetuneRequest) -> TrainResult:
    from transformers import AutoTokenizer

    request.check()
    tokenizer = AutoTokenizer.from_pretrained(request.base_model)
    data = build_examples(request, tokenizer)
    request.adapter_dir.mkdir(parents=True, exist_ok=True)
    (request.adapter_dir / RUN_FILE).write_text(json.dumps(request.run_settings(), indent=1))
    options = {"examples": request.examples, "context_tokens": request.context_tokens, "seed": request.seed}
    if request.recipe == "multidoc":
        options["target"] = request.target
    config = TrainConfig(
        request.base_model,
        request.adapter_dir,
        request.steps,
        request.recipe,
        options,
        learning_rate=request.learning_rate,
        max_length=request.context_tokens + 512,
        method=request.method,
        compression=request.compression,
        precision=request.precision,
    )
    return train(data.examples, config, data.rewards)


def _require(corpus: Corpus | None) -> Corpus:
    if corpus is None:
        raise ValueError("This recipe needs a collection: pass --collection.")
    return corpus
