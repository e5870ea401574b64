"""What the LC suites share (ruler, niah, position): questions, each over a collection made for it, answered
in `lc` mode through the HTTP API under eviction configurations, by one or more served models, one request
at a time, answers cached on disk.

Configurations: `none` (no eviction); `<policy>:<ratio>` (the question inside the compressed prompt:
per-request eviction, `kv.cache` false; a reconstruction policy such as kvzip runs its passes over the
whole prompt); `cache:<policy>:<ratio>` (query-agnostic policies: the question outside, the collection's
context compressed once as a shared cache, as lcrag serves follow-up questions).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx

from evals.api import AnswerCache, Reply, ask, replace_collection

Q = TypeVar("Q")
A = TypeVar("A")


@dataclass(frozen=True)
class LcQuestion:
    """One question and the collection it is asked over."""

    collection: str
    files: Sequence[tuple[str, str]]  # the documents (file name, text), in LC order (upload order)
    question: str


def parse_config(config: str) -> tuple[str | None, float, bool]:
    """(policy, ratio, cached): `none` -> (None, 0, False), `snapkv:0.5` -> ("snapkv", 0.5, False),
    `cache:kvzip:0.5` -> ("kvzip", 0.5, True)."""
    if config == "none":
        return None, 0.0, False
    rest = config.removeprefix("cache:")
    policy, _, ratio = rest.rpartition(":")
    return policy, float(ratio), rest != config


def configurations(policies: Sequence[str], ratios: Sequence[float], agnostic: set[str]) -> list[str]:
    """`none`, each policy at each ratio with the question inside, and query-agnostic ones also cached."""
    inside = [f"{policy}:{ratio}" for policy in policies for ratio in ratios]
    cached = [f"cache:{policy}:{ratio}" for policy in policies if policy in agnostic for ratio in ratios]
    return ["none", *inside, *cached]


def query_agnostic(http: httpx.Client) -> set[str]:
    """The server's query-agnostic policies (GET /v1/kv/policies)."""
    policies = http.get("/v1/kv/policies").json()["data"]
    return {policy["name"] for policy in policies if policy.get("query_agnostic")}


def chat_body(config: str, collection: str, question: str, model: str, max_tokens: int) -> dict[str, Any]:
    """The streamed, greedy `lc` request that answers `question` under `config`."""
    lcrag: dict[str, Any] = {"collection": collection, "mode": "lc"}
    policy, ratio, cached = parse_config(config)
    if policy is not None:
        lcrag["kv"] = {"policy": policy, "ratio": ratio, "cache": cached}
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
        replace_collection(http, question.collection, question.files)
        for config, model in pending:
            body = chat_body(config, question.collection, question.question, model, max_tokens)
            answers.add(scored(config, model, item, ask(http, body)))
            progress.update(1)
        http.delete(f"/v1/collections/{question.collection}")
    progress.close()
