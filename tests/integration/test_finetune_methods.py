"""Multidoc data from a real collection (MiniLM + Chroma negatives), GRPO with the multidoc scorers as
rewards, and compression-aware SFT, each through a real (tiny) TRL run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from bench.corpus import TOWNS, town_record
from finetune.collection import CollectionCorpus
from finetune.data import multidoc
from finetune.train import CARD_NAME, TrainConfig, train
from lcrag.cli import app

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def tokenizer(default_model_path: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(default_model_path)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory, embedder, tokenizer) -> Path:
    """A data dir whose Chroma store holds the collection `towns`: 4 records of each of 6 towns."""
    from rag.ingest import Ingestor
    from rag.loaders import load_bytes
    from rag.store import Store

    root = tmp_path_factory.mktemp("data")
    store = Store.open(path=str(root / "chroma"))
    store.create_collection("towns")
    ingestor = Ingestor(store, embedder, tokenizer, chunk_tokens=64, overlap_tokens=8)
    for copy in range(4):
        for town in TOWNS:
            ingestor.add("towns", load_bytes(f"{town[0]}-{copy}.txt", town_record(copy, *town).encode()))
    return root


@pytest.fixture(scope="module")
def corpus(data_dir: Path, embedder) -> CollectionCorpus:
    from rag.store import Store

    return CollectionCorpus(Store.open(path=str(data_dir / "chroma")), embedder, "towns")


def test_negatives_come_from_the_rag_pipeline_and_never_hold_the_answer(corpus, tokenizer) -> None:
    chunks = corpus.chunks()
    assert len(chunks) >= 24 and all(":" in chunk.chunk_id for chunk in chunks)
    by_id = {chunk.chunk_id: chunk.text for chunk in chunks}
    config = multidoc.MultidocConfig(target_tokens=700, pair_share=0.0)
    for index in range(4):
        item = multidoc.example(chunks, corpus.retrieve, tokenizer, config, seed=0, index=index)
        question = item.messages[1]["content"].split('1. "')[-1].split('"')[0]
        retrieved = corpus.retrieve(question, config.negatives_per_query)
        gold, negatives = item.metadata["gold_chunk_ids"][0], item.metadata["negatives"]
        assert gold in retrieved[:8]  # MiniLM ranks the blanked sentence's chunk near the top
        eligible = [i for i in retrieved if i != gold and item.quotes[0] not in by_id[i]]
        assert len(negatives) >= 3 and set(negatives) == set(eligible[: len(negatives)])
        assert item.reward(item.messages[-1]["content"]) == 1.0


def test_the_held_out_documents_never_reach_training_material(corpus, data_dir: Path, embedder) -> None:
    from rag.store import Store

    split = corpus.split
    titles = {s.doc_id: s.doc_title for s in corpus.store.chunks("towns")}
    assert split.unit == "document" and 1 <= len(split.held) < len(titles)
    assert all(chunk.chunk_id.split(":")[0] not in split.held for chunk in corpus.chunks())
    held = [  # each record's census sentence, found in no other record
        s.chunk.text.split(". ")[0]
        for s in corpus.store.chunks("towns")
        if s.doc_id in split.held and s.chunk.index == 0
    ]
    assert held and not any(census in text for census in held for _, text in corpus.documents())
    for town in ("copper bells", "census counted 1037 households", "the first frost"):
        assert all(hit.split(":")[0] not in split.held for hit in corpus.retrieve(town, 5))
        assert len(corpus.retrieve(town, 5)) == 5
    everything = CollectionCorpus(
        Store.open(path=str(data_dir / "chroma")), embedder, "towns", holdout_share=0
    )
    assert everything.split.unit == "none" and len(everything.chunks()) > len(corpus.chunks())


def test_grpo_scores_each_sampled_completion_against_its_own_example(
    corpus, tokenizer, tiny_model_dir: Path, tmp_path: Path
) -> None:
    config = multidoc.MultidocConfig(target_tokens=400, target="ids")
    items = multidoc.examples(corpus.chunks(), corpus.retrieve, tokenizer, config, count=3, seed=1)
    calls: list[tuple[list[Any], list[int], list[float]]] = []

    def spy(reward):
        def scored(prompts, completions, example, **kwargs):
            rewards = reward(prompts=prompts, completions=completions, example=example, **kwargs)
            calls.append((prompts, example, rewards))
            return rewards

        scored.__name__ = reward.__name__
        return scored

    rewards = [spy(reward) for reward in multidoc.reward_functions(items)]
    assert [reward.__name__ for reward in rewards] == ["answer_reward", "ids_reward"]
    settings = TrainConfig(tiny_model_dir, tmp_path / "grpo", steps=2, recipe="multidoc", method="grpo",
                           generations=2, max_completion_tokens=12)  # fmt: skip
    result = train([item.messages for item in items], settings, rewards)
    assert len(calls) == 2 * 2  # two rewards per step, two steps
    for prompts, example, scores in calls:
        assert len(prompts) == len(example) == len(scores) == 2  # one prompt's group of 2 generations
        for prompt, index in zip(prompts, example, strict=True):
            assert prompt[-1]["content"] == items[index].messages[-2]["content"]
        assert all(0.0 <= score <= 1.0 for score in scores)
    card = json.loads((result.adapter_dir / CARD_NAME).read_text())
    assert card["method"] == "grpo" and len(result.rewards) == 2 and result.tokens > 0
    assert (result.adapter_dir / "adapter_model.safetensors").is_file()


def test_the_cli_trains_multidoc_with_compression_aware_sft(data_dir: Path, peaky_model_dir: Path) -> None:
    losses = {}
    for name, extra in [("plain", []), ("evicted", ["--compression", "snapkv-0.5"])]:
        arguments = ["finetune", "--recipe", "multidoc", "--collection", "towns", "--out", name,
                     "--steps", "2", "--examples", "2", "--context-tokens", "400", "--target", "answer",
                     *extra, "--data-dir", str(data_dir), "--model", str(peaky_model_dir)]  # fmt: skip
        result = CliRunner().invoke(app, arguments)
        assert result.exit_code == 0, result.output
        assert f"Adapter {name!r} written" in result.output and "tokens/s on cpu" in result.output
        card = json.loads((data_dir / "adapters" / name / CARD_NAME).read_text())
        assert card["recipe"] == "multidoc" and card["recipe_options"]["target"] == "answer"
        assert card["compression"] == ("snapkv-0.5" if extra else None)
        losses[name] = card["loss_first"]
    # same seed, same data, same first batch: only the attention mask differs
    assert abs(losses["plain"] - losses["evicted"]) > 1e-3, losses
