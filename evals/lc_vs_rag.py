"""LC vs RAG vs compressed LC on the same real questions, through a server's HTTP API (what users get).

Questions come from HotpotQA dev (distractor setting) and SQuAD v2.0 dev (`evals.datasets`). They are put
in groups whose paragraphs (each question's gold and distractor paragraphs, the group's other questions'
paragraphs too) make one collection of about `--context-tokens` tokens, so the whole collection fits the
served model's LC window. Every question is asked in every mode, one request at a time (so each answer's
cost is its own): `rag@k` (top-k chunks, for each `--top-k`; `rag:<retrieval>@k` for each other `--retrievals`
kind), `lc`, `lc:<policy>-<ratio>` (each `--kv`; a
query-agnostic policy compresses the collection once, as a shared cache) and `auto`. Scores: substring
(the normalised gold answer in the answer), exact match and F1 (HotpotQA's normalisation,
`evals.scoring`), with bootstrap 95 % intervals; costs per answer: prompt tokens, KV bytes held (prompt
tokens kept in the KV cache x bytes per token), time to first token and total time; `auto`'s routes.
The equal-memory plot puts every mode at its accuracy and the KV memory its answers held.

    python -m evals.lc_vs_rag --out out/evals                 # starts a server; ~40 min on 2 cores
    python -m evals.lc_vs_rag --base-url http://127.0.0.1:8000 --questions 10 --quick
"""

from __future__ import annotations

import random
import re
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from compression.spec import KVSpec
from evals.api import (
    AnswerCache,
    Reply,
    add_server_options,
    ask,
    suite_client,
    token_counter,
    upload_whole,
    write_report,
)
from evals.common import accuracy_plot, bootstrap_ci, eval_parser
from evals.datasets import QAItem, hotpotqa, sample, squad
from evals.scoring import exact_match, f1, substring_match
from lcrag.client import kv_bytes_per_token, served_model

DATASETS = {"hotpotqa": hotpotqa, "squad": squad}
ASK_SUFFIX = " Answer with a few words."


@dataclass(frozen=True)
class Group:
    """Questions answered from one collection made of their paragraphs."""

    dataset: str
    name: str
    items: list[QAItem]


@dataclass(frozen=True)
class Answer:
    dataset: str
    question_id: str
    mode: str
    answer: str
    gold: list[str]
    substring: float
    exact: float
    f1: float
    prompt_tokens: int | None
    kv_tokens: int | None  # prompt tokens held in the KV cache while answering
    ttft_ms: float | None
    total_ms: float
    route: str | None = None
    cache: str | None = None
    error: str | None = None
    model: str | None = None  # the served model or adapter that answered

    @property
    def key(self) -> str:
        return answer_key(self.dataset, self.question_id, self.mode, self.model)


def answer_key(dataset: str, question_id: str, mode: str, model: str | None) -> str:
    return f"{dataset}|{question_id}|{mode}|{model}"


def groups(dataset: str, questions: int, context_tokens: int, count_tokens: Any, seed: int) -> list[Group]:
    """`questions` items of `dataset` in groups whose paragraphs add up to at most `context_tokens`."""
    chosen = sample(DATASETS[dataset](), questions, seed)
    result: list[Group] = []
    current: list[QAItem] = []
    size = 0
    for item in chosen:
        tokens = sum(count_tokens(p.text) + 8 for p in item.paragraphs)
        if current and size + tokens > context_tokens:
            result.append(Group(dataset, f"eval-{dataset}-{seed}-{len(result)}", current))
            current, size = [], 0
        current.append(item)
        size += tokens
    if current:
        result.append(Group(dataset, f"eval-{dataset}-{seed}-{len(result)}", current))
    return result


def upload(http: httpx.Client, group: Group, seed: int) -> None:
    """The group's collection, made anew: one document per distinct paragraph, in a seeded order."""
    paragraphs = {p.title: p for item in group.items for p in item.paragraphs}
    order = sorted(paragraphs)
    random.Random(seed).shuffle(order)
    upload_whole(http, group.name, [(file_name(title), paragraphs[title].text) for title in order])


def file_name(title: str) -> str:
    """A paragraph's title as a file name (its title in the collection)."""
    return re.sub(r"[^\w .,()-]", "_", title)[:120] + ".txt"


def mode_body(
    mode: str, collection: str, question: str, model: str, max_tokens: int, suffix: str = ASK_SUFFIX
) -> dict[str, Any]:
    """The chat request for `mode`: `rag@k`, `lc`, `lc:<policy>-<ratio>` or `auto`; `suffix` follows the
    question."""
    lcrag: dict[str, Any] = {"collection": collection}
    name, _, extra = mode.partition("@")
    base, _, kv = name.partition(":")
    lcrag["mode"] = base
    if extra:
        lcrag["top_k"] = int(extra)
    if base == "rag" and kv:  # rag:<retrieval>[+document]@k
        retrieval, _, order = kv.partition("+")
        lcrag["retrieval"] = retrieval
        if order:
            lcrag["order"] = order
    elif kv:  # `compression.spec.KVSpec.parse`: options in brackets, the older `<policy>:<ratio>` read too
        spec = KVSpec.parse(kv)
        lcrag["kv"] = {"policy": spec.policy, "ratio": spec.ratio}
        if options := spec.all_options():
            lcrag["kv"]["options"] = options
    return {
        "model": model,
        "messages": [{"role": "user", "content": question + suffix}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
        "lcrag": lcrag,
    }


def score(dataset: str, item: QAItem, mode: str, reply: Reply, model: str | None = None) -> Answer:
    text, meta = reply.text, reply.lcrag
    kv = meta.get("kv") or {}
    prompt = meta.get("prompt_tokens")
    held = prompt
    if prompt is not None and kv.get("tokens_after") is not None:
        held = prompt - kv["tokens_before"] + kv["tokens_after"]
    return Answer(
        dataset, item.id, mode, text, list(item.answers),
        max(substring_match(text, gold) for gold in item.answers),
        max(exact_match(text, gold) for gold in item.answers),
        max(f1(text, gold) for gold in item.answers),
        prompt, held, reply.ttft_ms, reply.total_ms, meta.get("route"), kv.get("cache"), reply.error, model,
    )  # fmt: skip


def summary(answers: list[Answer], bytes_per_token: float | None) -> list[dict[str, Any]]:
    """One row per (dataset, mode): accuracy with intervals, costs, routes."""
    rows = []
    for dataset, mode in dict.fromkeys((a.dataset, a.mode) for a in answers):
        mine = [a for a in answers if a.dataset == dataset and a.mode == mode]
        answered = [a for a in mine if a.error is None]
        substrings = [a.substring for a in mine]
        low, high = bootstrap_ci(substrings)
        held = [a.kv_tokens for a in answered if a.kv_tokens is not None]
        ttfts = [a.ttft_ms for a in answered if a.ttft_ms is not None]
        routes = [a.route for a in answered if a.route]
        prompts = [a.prompt_tokens for a in answered if a.prompt_tokens]
        rows.append(
            {
                "dataset": dataset,
                "mode": mode,
                "questions": len(mine),
                "failed": len(mine) - len(answered),
                "substring": 100 * statistics.fmean(substrings),
                "ci": (100 * low, 100 * high),
                "exact": 100 * statistics.fmean(a.exact for a in mine),
                "f1": 100 * statistics.fmean(a.f1 for a in mine),
                "prompt_tokens": statistics.fmean(prompts) if prompts else None,
                "kv_tokens": statistics.fmean(held) if held else None,
                "kv_mib": statistics.fmean(held) * bytes_per_token / 2**20
                if held and bytes_per_token
                else None,
                "ttft_s": statistics.median(ttfts) / 1000 if ttfts else None,
                "total_s": statistics.median(a.total_ms for a in answered) / 1000 if answered else None,
                "routes": {route: routes.count(route) for route in sorted(set(routes))} or None,
            }
        )
    return rows


def markdown(rows: list[dict[str, Any]], first: str = "dataset") -> str:
    """The summary table; `first` names the first column (the rows' `dataset`)."""
    lines = [
        f"| {first} | mode | questions | substring % [95 % CI] | EM % | F1 % | prompt tokens | KV MiB held | "
        "TTFT s (median) | total s (median) | routes |",
        "|---|---|---:|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        fmt = lambda value, spec: "-" if value is None else format(value, spec)  # noqa: E731
        routes = ", ".join(f"{k} {v}" for k, v in (r["routes"] or {}).items()) or "-"
        failed = f" ({r['failed']} failed)" if r["failed"] else ""
        lines.append(
            f"| {r['dataset']} | {r['mode']} | {r['questions']}{failed} | {r['substring']:.1f} "
            f"[{r['ci'][0]:.1f}, {r['ci'][1]:.1f}] | {r['exact']:.1f} | {r['f1']:.1f} | "
            f"{fmt(r['prompt_tokens'], '.0f')} | {fmt(r['kv_mib'], '.1f')} | {fmt(r['ttft_s'], '.2f')} | "
            f"{fmt(r['total_s'], '.2f')} | {routes} |"
        )
    return "\n".join(lines)


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    """Accuracy vs the KV memory each mode's answers held: the equal-memory comparison."""
    title = "Accuracy vs KV memory held per answer (SmolLM2-135M)"
    with accuracy_plot(
        path, title, "KV cache held per answer (MiB)", "substring accuracy (%)", "lower right"
    ) as axes:
        for dataset, marker in zip(dict.fromkeys(r["dataset"] for r in rows), "os^", strict=False):
            for r in (r for r in rows if r["dataset"] == dataset and r["kv_mib"] is not None):
                axes.scatter(r["kv_mib"], r["substring"], marker=marker)
                axes.annotate(f"{r['mode']}", (r["kv_mib"], r["substring"]), fontsize=7,
                              xytext=(3, 3), textcoords="offset points")  # fmt: skip
            axes.scatter([], [], marker=marker, color="gray", label=dataset)


def suite_modes(retrievals: list[str], top_k: list[int], kv: list[str], *, rag_only: bool) -> list[str]:
    """Every mode the run asks, in report order: `rag[:<retrieval>]@k`, then `lc`, `lc:<kv>` and `auto`."""
    rag = [f"rag{'' if r == 'dense' else ':' + r}@{k}" for r in retrievals for k in top_k]
    return rag if rag_only else [*rag, "lc", *(f"lc:{setting}" for setting in kv), "auto"]


def main() -> None:
    parser = eval_parser(__doc__)
    add_server_options(parser)
    parser.add_argument("--datasets", nargs="+", choices=list(DATASETS), default=list(DATASETS))
    parser.add_argument("--questions", type=int, default=20, help="Questions per dataset.")
    parser.add_argument("--context-tokens", type=int, default=6000, help="Paragraph tokens per collection.")
    parser.add_argument("--top-k", type=int, nargs="+", default=[2, 5])
    parser.add_argument("--kv", nargs="+", default=["chunkkv-0.75", "kvzip-0.75", "kvzip-0.875"])
    parser.add_argument(
        "--retrievals", nargs="+", default=["dense"],
        help="rag's retrieval kinds: dense, bm25, hybrid, and any with '+document' (OP-RAG order).",
    )  # fmt: skip
    parser.add_argument(
        "--rag-only", action="store_true",
        help="Ask only the rag modes: answer accuracy per retrieval kind, without lc, lc:<kv> and auto.",
    )  # fmt: skip
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="4 questions per dataset, one KV setting.")
    args = parser.parse_args()
    if args.quick:
        args.questions, args.kv = min(args.questions, 4), args.kv[:1]
    modes = suite_modes(args.retrievals, args.top_k, args.kv, rag_only=args.rag_only)

    from tqdm import tqdm

    count = token_counter(args.model)
    answers = AnswerCache(args.out / "lc_vs_rag.answers.jsonl", Answer, lambda answer: answer.key)
    with suite_client(args, "lc_vs_rag") as http, answers.open():
        served = args.adapter or served_model(http)
        bytes_per_token = kv_bytes_per_token(http)
        work = [
            g for d in args.datasets for g in groups(d, args.questions, args.context_tokens, count, args.seed)
        ]
        progress = tqdm(total=sum(len(g.items) for g in work) * len(modes), desc="answers")
        for group in work:
            pending = [
                (i, m)
                for i in group.items
                for m in modes
                if answer_key(group.dataset, i.id, m, served) not in answers
            ]
            progress.update(len(group.items) * len(modes) - len(pending))
            if not pending:
                continue
            upload(http, group, args.seed)
            for item, mode in pending:
                body = mode_body(mode, group.name, item.question.strip(), served, args.max_tokens)
                answers.add(score(group.dataset, item, mode, ask(http, body), served))
                progress.update(1)
            http.delete(f"/v1/collections/{group.name}")
        progress.close()
    chosen = [
        a
        for a in answers.answers.values()
        if a.mode in modes and a.dataset in args.datasets and a.model == served
    ]
    rows = summary(chosen, bytes_per_token)
    write_report(args.out, "lc_vs_rag", rows, markdown(rows))
    plot(rows, args.out / "lc_vs_rag.png")
    print(markdown(rows))
    print(f"\nWrote {args.out}/lc_vs_rag.json, .md and .png")


if __name__ == "__main__":
    main()
