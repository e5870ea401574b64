"""Answer scorers, written from the benchmarks' published definitions:

- SQuAD / HotpotQA (Rajpurkar et al., 2016; Yang et al., 2018): answers are normalised (lower case, no
  punctuation, no articles a/an/the, single spaces); exact match compares normalised strings; F1 is the
  harmonic mean of precision and recall over normalised tokens (HotpotQA scores 0 when either side is
  yes / no / noanswer and the two differ); substring match asks whether the normalised gold answer occurs
  in the normalised prediction (what a chatty small model's answer needs).
- RULER (Hsieh et al., 2024): `string_match_all` is the share of the references found (case-insensitive)
  in the prediction; `string_match_part` is 1 when any reference is found.
Each returns a score in [0, 1] for one prediction.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Sequence

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = str.maketrans("", "", string.punctuation)
_SPECIAL = ("yes", "no", "noanswer")


def normalize_answer(text: str) -> str:
    """Lower case, punctuation and articles removed, whitespace collapsed."""
    return " ".join(_ARTICLES.sub(" ", text.lower().translate(_PUNCTUATION)).split())


def exact_match(prediction: str, gold: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(gold))


def f1(prediction: str, gold: str) -> float:
    predicted, expected = normalize_answer(prediction), normalize_answer(gold)
    if (predicted in _SPECIAL or expected in _SPECIAL) and predicted != expected:
        return 0.0
    predicted_tokens, expected_tokens = predicted.split(), expected.split()
    common = sum((Counter(predicted_tokens) & Counter(expected_tokens)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(predicted_tokens), common / len(expected_tokens)
    return 2 * precision * recall / (precision + recall)


def substring_match(prediction: str, gold: str) -> float:
    expected = normalize_answer(gold)
    return float(bool(expected) and expected in normalize_answer(prediction))


def string_match_all(prediction: str, references: Sequence[str]) -> float:
    found = [reference.lower() in prediction.lower() for reference in references]
    return sum(found) / len(found) if found else 0.0


def string_match_part(prediction: str, references: Sequence[str]) -> float:
    return float(any(reference.lower() in prediction.lower() for reference in references))
