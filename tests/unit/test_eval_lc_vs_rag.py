"""The lc-vs-rag suite's pieces: question groups sized to the collection budget, one chat request per mode,
scores and the KV memory an answer held, bootstrap intervals."""

from evals.api import Reply
from evals.common import bootstrap_ci
from evals.datasets import Paragraph, QAItem
from evals.lc_vs_rag import file_name, groups, mode_body, score, suite_modes, summary

ITEM = QAItem("q1", "Who built it?", ("Gustave Eiffel", "Eiffel"), (Paragraph("Tower", "Built by Eiffel."),),
              frozenset({"Tower"}))  # fmt: skip


def test_groups_fill_each_collection_up_to_the_budget() -> None:
    made = groups("squad", 12, 600, lambda text: len(text.split()) * 2, seed=1)
    assert sum(len(group.items) for group in made) == 12 and len(made) > 1
    for group in made:
        size = sum(len(p.text.split()) * 2 + 8 for item in group.items for p in item.paragraphs)
        assert size <= 600 or len(group.items) == 1
    assert [g.name for g in made] == [f"eval-squad-1-{i}" for i in range(len(made))]


def test_each_mode_is_one_streamed_chat_request_over_the_collection() -> None:
    rag = mode_body("rag@5", "docs", "Who?", "m", 32)
    assert rag["lcrag"] == {"collection": "docs", "mode": "rag", "top_k": 5} and rag["stream"] is True
    kv = mode_body("lc:kvzip-0.875", "docs", "Who?", "m", 32)["lcrag"]
    assert kv == {"collection": "docs", "mode": "lc", "kv": {"policy": "kvzip", "ratio": 0.875}}
    assert mode_body("auto", "docs", "Who?", "m", 8)["lcrag"] == {"collection": "docs", "mode": "auto"}
    hybrid = mode_body("rag:hybrid+document@5", "docs", "Who?", "m", 32)["lcrag"]
    assert hybrid == {
        "collection": "docs",
        "mode": "rag",
        "top_k": 5,
        "retrieval": "hybrid",
        "order": "document",
    }
    assert file_name("AC/DC: Back in Black") == "AC_DC_ Back in Black.txt"


def test_the_run_asks_each_retrieval_kind_at_each_k_and_rag_only_drops_the_rest() -> None:
    every = suite_modes(["dense", "hybrid+document"], [2, 5], ["kvzip-0.75"], rag_only=False)
    rag = ["rag@2", "rag@5", "rag:hybrid+document@2", "rag:hybrid+document@5"]
    assert every == [*rag, "lc", "lc:kvzip-0.75", "auto"]
    assert suite_modes(["dense", "hybrid+document"], [2, 5], ["kvzip-0.75"], rag_only=True) == rag


def test_an_answer_scores_against_every_gold_and_counts_the_kv_it_held() -> None:
    kv = {"tokens_before": 900, "tokens_after": 128, "cache": "hit"}
    answer = score(
        "squad", ITEM, "lc:kvzip-0.875", Reply("It was Eiffel.", {"prompt_tokens": 930, "kv": kv}, 50, 900)
    )
    assert (answer.substring, answer.exact) == (1.0, 0.0) and answer.kv_tokens == 30 + 128
    assert answer.cache == "hit"
    plain = score("squad", ITEM, "lc", Reply("Gustave Eiffel", {"prompt_tokens": 930}, 80, 1000))
    assert (plain.exact, plain.kv_tokens) == (1.0, 930)
    failed = score("squad", ITEM, "lc", Reply("", {}, None, 5, "does not fit"))
    (row,) = summary([plain, failed], bytes_per_token=1024.0)
    assert row["questions"] == 2 and row["failed"] == 1 and row["substring"] == 50.0
    assert row["kv_mib"] == 930 * 1024 / 2**20


def test_bootstrap_intervals_hold_the_mean() -> None:
    values = [1.0] * 30 + [0.0] * 70
    low, high = bootstrap_ci(values)
    assert low < 0.3 < high and high - low < 0.3
    assert bootstrap_ci([1.0] * 10) == (1.0, 1.0)
