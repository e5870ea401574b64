"""IN2-style questions from documents: extractive and checkable, needed segments at all depths, sized."""

from pathlib import Path

import pytest

from bench.corpus import TOWNS, town_paragraph
from finetune.data.in2 import In2Config, example, segments_of


@pytest.fixture(scope="module")
def tok(default_model_path: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(default_model_path)


@pytest.fixture(scope="module")
def segments(tok):
    # 60 distinct paragraphs: each town six times with its facts numbered, so cue sentences are unique
    documents = [
        (f"{name}-{copy}.txt", f"Record {copy} of {name}. " + town_paragraph(name, *facts))
        for copy in range(10)
        for name, *facts in TOWNS
    ]
    return segments_of(documents, tok, segment_tokens=64)


def test_answers_follow_their_cues_in_the_context_and_are_checkable(segments, tok) -> None:
    config = In2Config(target_tokens=1200, segment_tokens=64, integration_share=0.5)
    for index in range(12):
        item = example(segments, tok, config, seed=3, index=index)
        prompt = " ".join(item.messages[0]["content"].split())
        assert len(item.answers) == (2 if item.kind == "integration" else 1) == len(item.depths)
        for answer in item.answers:
            assert " ".join(answer.split()) in prompt
        assert item.is_correct(item.messages[1]["content"])
        assert not item.is_correct(item.answers[0][:-8]) and item.prompt_tokens <= 1200 + 80


def test_same_seed_same_example(segments, tok) -> None:
    config = In2Config(target_tokens=800, segment_tokens=64)
    assert example(segments, tok, config, 1, 4) == example(segments, tok, config, 1, 4)
    assert example(segments, tok, config, 1, 4) != example(segments, tok, config, 2, 4)


def test_needed_segments_sit_at_all_depths_and_some_contexts_are_short(segments, tok) -> None:
    config = In2Config(target_tokens=1000, segment_tokens=64, short_share=0.25, short_tokens=256)
    items = [example(segments, tok, config, seed=0, index=i) for i in range(60)]
    depth_bins = {min(4, int(depth * 5)) for item in items for depth in item.depths}
    assert depth_bins == {0, 1, 2, 3, 4}
    short = [item for item in items if item.prompt_tokens <= 256 + 80]
    assert 5 <= len(short) <= 30 and all(item.segments < 8 for item in short)


def test_bad_input_is_refused_with_the_reason(tok) -> None:
    with pytest.raises(ValueError, match="empty"):
        segments_of([("empty.txt", "   ")], tok)
    with pytest.raises(ValueError, match="fractions"):
        In2Config(integration_share=1.5)
