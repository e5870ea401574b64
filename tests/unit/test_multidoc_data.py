"""Multidoc in-context retrieval data: gold among retrieved negatives, checkable targets and scorers."""

import re
from pathlib import Path

import pytest

from bench.corpus import TOWNS, town_record
from finetune.data.multidoc import TARGETS, CorpusChunk, MultidocConfig, example
from rag.context import LC_INSTRUCTIONS


@pytest.fixture(scope="module")
def tok(default_model_path: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(default_model_path)


@pytest.fixture(scope="module")
def chunks(tok) -> list[CorpusChunk]:
    """Town records: a unique census sentence each, and town sentences shared by the town's records."""
    texts = [town_record(copy, *town) for copy in range(6) for town in TOWNS]
    return [CorpusChunk(f"c{i}", t, len(tok(t).input_ids), f"Record {i}") for i, t in enumerate(texts)]


def lexical_retriever(chunks: list[CorpusChunk]):
    """A stand-in retriever (the CLI uses the real embedder + Chroma): most shared words first."""

    def retrieve(query: str, k: int) -> list[str]:
        words = set(query.lower().split())
        ranked = sorted(chunks, key=lambda c: (-len(words & set(c.text.lower().split())), c.chunk_id))
        return [chunk.chunk_id for chunk in ranked[:k]]

    return retrieve


@pytest.mark.parametrize("target", TARGETS)
def test_the_target_reply_scores_full_marks_and_wrong_replies_do_not(chunks, tok, target: str) -> None:
    config = MultidocConfig(target_tokens=900, target=target, pair_share=0.5)
    by_id = {chunk.chunk_id: chunk.text for chunk in chunks}
    for index in range(8):
        item = example(chunks, lexical_retriever(chunks), tok, config, seed=1, index=index)
        reply = item.messages[-1]["content"]
        assert item.reward(reply) == 1.0, (reply, item.score(reply))
        assert set(item.score(reply)) == {
            "answer",
            *{"ids": ["ids"], "ids+content": ["ids", "content"], "ids+quotes": ["ids", "quotes"]}.get(
                target, []
            ),
        }
        system, prompt = (message["content"] for message in item.messages[:2])
        assert system == LC_INSTRUCTIONS and prompt.startswith("Documents:\n\nDocument 1: ")
        for number, text in item.gold.items():
            assert re.search(rf"Document {number}: [^\n]+\n{re.escape(text)}", prompt)
        for quote, word in zip(item.quotes, item.answers, strict=True):
            assert any(quote in text for text in item.gold.values()) and word in quote
            assert quote not in prompt.split("\n\n")[-1]  # the question shows it only with its blank
            negatives = [by_id[i] for i in item.metadata["negatives"]]
            assert not any(quote in text for text in negatives)  # the gold ids are unambiguous
        assert item.prompt_tokens <= 900 and item.documents >= 3
        assert item.answer_score("Answer: nothing") == 0.0
        wrong_ids = sorted(set(range(1, item.documents + 1)) - set(item.gold))[:1]
        assert item.ids_score(f"[DOC {wrong_ids[0]}]\n{reply}") == 0.0
        fake_quote = "\n".join(f'[DOC {n}] "A sentence that is nowhere."' for n in item.gold)
        assert item.quotes_score(fake_quote) == 0.0
        assert item.content_score("[DOC 1] nothing") == 0.0


def test_negatives_are_the_retrievers_best_non_gold_chunks(chunks, tok) -> None:
    retrieve = lexical_retriever(chunks)
    config = MultidocConfig(target_tokens=700, pair_share=0.0)
    by_id = {chunk.chunk_id: chunk.text for chunk in chunks}
    for index in range(6):
        item = example(chunks, retrieve, tok, config, seed=2, index=index)
        gold_id, negatives = item.metadata["gold_chunk_ids"][0], item.metadata["negatives"]
        question = item.messages[1]["content"].split('1. "')[-1].split('"')[0]
        eligible = [i for i in retrieve(question, 20) if i != gold_id and item.quotes[0] not in by_id[i]]
        assert set(negatives) == set(eligible[: len(negatives)]) and len(negatives) >= 2


def test_same_seed_same_example_and_gold_at_all_depths(chunks, tok) -> None:
    retrieve = lexical_retriever(chunks)
    config = MultidocConfig(target_tokens=800, target="ids")
    assert example(chunks, retrieve, tok, config, 4, 2) == example(chunks, retrieve, tok, config, 4, 2)
    assert example(chunks, retrieve, tok, config, 4, 2) != example(chunks, retrieve, tok, config, 5, 2)
    items = [example(chunks, retrieve, tok, config, seed=0, index=i) for i in range(40)]
    assert {min(4, int(depth * 5)) for item in items for depth in item.depths} == {0, 1, 2, 3, 4}
    assert {len(item.answers) for item in items} == {1, 2}


def test_bad_configurations_and_tiny_collections_are_refused(chunks, tok) -> None:
    with pytest.raises(ValueError, match="Unknown target 'quotes'"):
        MultidocConfig(target="quotes")
    with pytest.raises(ValueError, match="at least 3 chunks"):
        example(chunks[:2], lexical_retriever(chunks[:2]), tok, MultidocConfig(), 0, 0)
