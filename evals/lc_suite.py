"""What the LC suites share (ruler, niah, position, val): questions, each over a collection made for it,
answered in `lc` mode through the HTTP API under eviction configurations, by one or more served models, one
request at a time, answers cached on disk.

Configurations (`compression.spec.parse_config`): `none` (no eviction); `<policy>-<ratio>` (the question
inside the compressed prompt: per-request eviction, `kv.cache` false; a reconstruction policy such as kvzip
runs its passes over the whole prompt); `cache:<policy>-<ratio>` (query-agnostic policies: the question
outside, the collection's context compressed once as a shared cache, as lcrag serves follow-up questions).
A policy may carry options: `cache:kvzip[chunk=8]-0.875`. The older colon spelling (`snapkv:0.5`,
`cache:kvzip:0.875`) is read too; configurations are asked, keyed in the answer cache and reported in the
dash spelling, and answers a file holds under the old spelling count as the same configuration's.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx

from compression.spec import normal_config, parse_config
from evals.api import (
    AnswerCache,
    Reply,
    ask,
    suite_client,
    token_counter,
    upload_whole,
    write_report,
)
from evals.common import respelled
from evals.ruler_tasks import Sample
from lcrag.client import kv_policies, served_model
from rag.context import LC_DOCUMENT_HEADER_TOKENS, LC_TEMPLATE_TOKENS

Q = TypeVar("Q")
A = TypeVar("A")
BASE = "base"  # in a suite's --models: the served base model (or --adapter)


@dataclass(frozen=True)
class LcQuestion:
    """One question and the collection it is asked over."""

    collection: str
    files: Sequence[tuple[str, str]]  # the documents (file name, text), in LC order (upload order)
    question: str


@dataclass(frozen=True)
class Probe:
    """A generated sample asked as a one-document collection, and where the suite put its target (a depth
    or a depth bin), if it chose."""

    sample: Sample
    place: float | None = None


@dataclass(frozen=True)
class ProbeAnswer:
    config: str
    model: str
    task: str
    length: int
    seed: int
    answer: str
    expected: list[str]
    score: float
    place: float | None = None
    kv_tokens_before: int | None = None
    kv_tokens_after: int | None = None
    cache: str | None = None
    ttft_ms: float | None = None
    error: str | None = None

    @property
    def key(self) -> str:
        return f"{self.config}|{self.model}|{self.task}|{self.length}|{self.place}|{self.seed}"


def probe_key(config: str, model: str, probe: Probe) -> str:
    sample = probe.sample
    return f"{config}|{model}|{sample.task}|{sample.length}|{probe.place}|{sample.seed}"


def probe_question(probe: Probe) -> LcQuestion:
    sample = probe.sample
    place = "" if probe.place is None else f"-{round(100 * probe.place)}"
    name = f"{sample.task.replace('_', '-')}-{sample.length}{place}-{sample.seed}"
    return LcQuestion(name, [("context.txt", sample.context)], sample.question)


def probe_answer(config: str, model: str, probe: Probe, reply: Reply) -> ProbeAnswer:
    """The reply scored with the sample's metric (0 for a failed request), with what eviction kept."""
    sample, kv = probe.sample, reply.lcrag.get("kv") or {}
    return ProbeAnswer(
        config, model, sample.task, sample.length, sample.seed, reply.text, list(sample.answers),
        sample.score(reply.text) if reply.error is None else 0.0, probe.place,
        kv.get("tokens_before"), kv.get("tokens_after"), kv.get("cache"), reply.ttft_ms, reply.error,
    )  # fmt: skip


def lc_prompt_counter(args: argparse.Namespace) -> Callable[[str], int]:
    """Tokens of a one-document LC prompt around `text` (the model's tokenizer, plus lcrag's instructions,
    headings and chat template), to size a probe's context to a prompt length."""
    count = token_counter(args.model)
    return lambda text: count(text) + LC_TEMPLATE_TOKENS + LC_DOCUMENT_HEADER_TOKENS


def configurations(policies: Sequence[str], ratios: Sequence[float], agnostic: set[str]) -> list[str]:
    """`none`, each policy at each ratio with the question inside, and query-agnostic ones also cached."""
    inside = [f"{policy}-{ratio}" for policy in policies for ratio in ratios]
    cached = [f"cache:{policy}-{ratio}" for policy in policies if policy in agnostic for ratio in ratios]
    return [normal_config(config) for config in ["none", *inside, *cached]]


def query_agnostic(http: httpx.Client) -> set[str]:
    """The server's query-agnostic policies (GET /v1/kv/policies)."""
    return {policy["name"] for policy in kv_policies(http) if policy.get("query_agnostic")}


def chat_body(config: str, collection: str, question: str, model: str, max_tokens: int) -> dict[str, Any]:
    """The streamed, greedy `lc` request that answers `question` under `config`."""
    lcrag: dict[str, Any] = {"collection": collection, "mode": "lc"}
    spec, cached = parse_config(config)
    if spec is not None:
        lcrag["kv"] = {"policy": spec.policy, "ratio": spec.ratio, "cache": cached}
        if options := spec.all_options():
            lcrag["kv"]["options"] = options
    return {
        "model": model,
        "messages": [{"role": "user", "content": question}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
        "lcrag": lcrag,
    }


def answer_all(
    http: httpx.Client,
    answers: AnswerCache[A],
    items: Sequence[Q],
    asked: Callable[[Q], LcQuestion],
    runs: Sequence[tuple[str, str]],
    key: Callable[[str, str, Q], str],
    scored: Callable[[str, str, Q, Reply], A],
    max_tokens: int,
    desc: str,
) -> None:
    """Every item asked in every (config, model) of `runs` whose `key` is not cached yet: its collection
    made once, every run asked, the collection deleted; progress on a bar."""
    from tqdm import tqdm

    progress = tqdm(total=len(items) * len(runs), desc=desc)
    for item in items:
        pending = [(config, model) for config, model in runs if key(config, model, item) not in answers]
        progress.update(len(runs) - len(pending))
        if not pending:
            continue
        question = asked(item)
        upload_whole(http, question.collection, question.files)
        for config, model in pending:
            body = chat_body(config, question.collection, question.question, model, max_tokens)
            answers.add(scored(config, model, item, ask(http, body)))
            progress.update(1)
        http.delete(f"/v1/collections/{question.collection}")
    progress.close()


def answer_suite(
    args: argparse.Namespace,
    suite: str,
    items: Sequence[Q],
    asked: Callable[[Q], LcQuestion],
    key: Callable[[str, str, Q], str],
    scored: Callable[[str, str, Q, Reply], A],
    kind: Callable[..., A],
    configs: Sequence[str] | Callable[[httpx.Client], Sequence[str]],
    models: Sequence[str] = (BASE,),
) -> list[A]:
    """The suite's answers (`<suite>.answers.jsonl` in --out, filled where missing) for every item in every
    config (in the one spelling, `normal_config`) and model, on --base-url or a server started for it."""
    if not callable(configs):  # a bad config fails before the server starts
        configs = list(dict.fromkeys(normal_config(config) for config in configs))
    answers = AnswerCache(
        args.out / f"{suite}.answers.jsonl",
        respelled(kind),
        lambda answer: answer.key,  # type: ignore[attr-defined]
    )
    with suite_client(args, suite) as http, answers.open():
        base = args.adapter or served_model(http)
        chosen = list(dict.fromkeys(map(normal_config, configs(http)))) if callable(configs) else configs
        runs = [(config, base if model == BASE else model) for model in models for config in chosen]
        answer_all(http, answers, items, asked, runs, key, scored, args.max_tokens, f"{suite} answers")
    wanted = {key(config, model, item) for config, model in runs for item in items}
    return [answer for answer_key, answer in answers.answers.items() if answer_key in wanted]


def report(out: Path, suite: str, rows: Any, table: str, draw: Callable[[Path], None]) -> None:
    """JSON and Markdown (with the command), the PNG `draw` makes, and the table on stdout."""
    write_report(out, suite, rows, table)
    draw(out / f"{suite}.png")
    print(table)
    print(f"\nWrote {out}/{suite}.json, .md and .png")
