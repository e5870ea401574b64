"""Retrieval quality: recall@k of the gold paragraphs for dense, BM25 and hybrid retrieval, through a
server's query API (`POST /v1/collections/{name}/query`), on HotpotQA and SQuAD.

Per dataset, `--questions` questions are sampled and all their paragraphs (HotpotQA: each question's two
gold and eight distractor paragraphs; SQuAD: each question's paragraph) go into one collection, one
document per paragraph, so every question is asked against many distractors. Each question is retrieved
with every kind at every `--top-k`; recall@k is the share of its gold paragraphs among the top k (all of
them: HotpotQA's questions need both), with a bootstrap 95 % interval, and the tokens the k chunks hold
(the RAG prompt's budget). Document order does not change which chunks are kept, so it has no row here.

    python -m evals.retrieval --out out/evals                 # starts a server; ~5 min on 2 cores
    python -m evals.retrieval --questions 20 --top-k 5
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

import httpx

from evals.api import add_server_options, suite_client, upload_whole, write_report
from evals.common import bootstrap_ci, eval_parser
from evals.datasets import QAItem, hotpotqa, sample, squad
from evals.lc_vs_rag import file_name
from lcrag.client import call
from rag.retrieve import RETRIEVALS

DATASETS = {"hotpotqa": hotpotqa, "squad": squad}


@dataclass(frozen=True)
class Row:
    dataset: str
    retrieval: str
    top_k: int
    recall: float  # mean share of gold paragraphs retrieved, in %
    all_gold: float  # questions with every gold paragraph retrieved, in %
    ci: tuple[float, float]
    tokens: float  # mean tokens of the k retrieved chunks
    questions: int


def build(http: httpx.Client, dataset: str, items: list[QAItem]) -> str:
    """One collection holding every paragraph of `items` (each paragraph once); returns its name."""
    name = f"eval-retrieval-{dataset}"
    paragraphs = {p.title: p.text for item in items for p in item.paragraphs}
    upload_whole(http, name, [(file_name(title), text) for title, text in sorted(paragraphs.items())])
    return name


def recall_of(http: httpx.Client, collection: str, item: QAItem, retrieval: str, k: int) -> tuple[float, int]:
    """(share of the gold paragraphs among the top `k`, tokens of the hits)."""
    body = {"query": item.question, "top_k": k, "retrieval": retrieval}
    hits = call(http, "POST", f"/v1/collections/{collection}/query", json=body)["data"]
    found = {hit["title"] for hit in hits}
    gold = {file_name(title).removesuffix(".txt") for title in item.gold}
    tokens = sum(len(hit["text"].split()) for hit in hits)
    return len(gold & found) / len(gold), tokens


def evaluate(http: httpx.Client, dataset: str, items: list[QAItem], top_ks: list[int]) -> list[Row]:
    collection = build(http, dataset, items)
    rows = []
    for retrieval in RETRIEVALS:
        for k in top_ks:
            results = [recall_of(http, collection, item, retrieval, k) for item in items]
            recalls = [100.0 * share for share, _ in results]
            low, high = bootstrap_ci(recalls)
            rows.append(Row(
                dataset, retrieval, k, round(statistics.mean(recalls), 1),
                round(100.0 * sum(share == 1.0 for share, _ in results) / len(results), 1),
                (round(low, 1), round(high, 1)), round(statistics.mean(t for _, t in results), 1), len(items),
            ))  # fmt: skip
    http.delete(f"/v1/collections/{collection}")
    return rows


def markdown(rows: list[Row]) -> str:
    lines = ["| dataset | retrieval | k | recall@k % | all gold % | 95 % CI | words retrieved | questions |",
             "|---|---|---:|---:|---:|---|---:|---:|"]  # fmt: skip
    for row in rows:
        lines.append(
            f"| {row.dataset} | {row.retrieval} | {row.top_k} | {row.recall} | {row.all_gold} | "
            f"{row.ci[0]} to {row.ci[1]} | {row.tokens} | {row.questions} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = eval_parser(__doc__)
    add_server_options(parser)
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    parser.add_argument("--questions", type=int, default=100, help="Questions per dataset.")
    parser.add_argument("--top-k", type=int, nargs="+", default=[2, 5], help="k values to measure.")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rows: list[Row] = []
    with suite_client(args, "retrieval") as http:
        for dataset in args.datasets:
            items = sample(DATASETS[dataset](), args.questions, args.seed)
            rows += evaluate(http, dataset, items, args.top_k)
    table = markdown(rows)
    command = write_report(args.out, "retrieval", [row.__dict__ for row in rows], table)
    print(f"`{command}`\n\n{table}")


if __name__ == "__main__":
    main()
