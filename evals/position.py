"""Lost in the middle: multi-document QA with the gold paragraph at each of several positions (Liu et al.,
2023, "Lost in the Middle"; the MDQA probe of Xiong et al., 2024), through a server's HTTP API in `lc` mode.

Each SQuAD v2.0 dev question (`evals.datasets`) is asked over a collection of `--documents` paragraphs: its
gold paragraph at one position, the others other articles' paragraphs (seeded), uploaded in that order
(lcrag's LC prompt keeps upload order). Every question is asked with the gold at every `--positions`, by
every `--models` (the base model and served LoRA adapters, e.g. a kv_retrieval one) under every
`--configs` (`evals.lc_suite`). Scores: substring accuracy per position, with bootstrap 95 % intervals,
and the max - min gap across positions (a flat curve has a small gap). Writes position.json, position.md
and position.png.

    python -m evals.position --out out/evals                          # 20 questions x 5 positions
    python -m evals.position --quick --out out/evals                  # a few minutes
    python -m evals.position --base-url http://127.0.0.1:8000 --models base kv-retrieval-lora
"""

from __future__ import annotations

import random
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evals.api import Reply, add_server_options, token_counter
from evals.common import accuracy_plot, bootstrap_ci, config_argument, eval_parser
from evals.datasets import Paragraph, QAItem, squad
from evals.lc_suite import BASE, LcQuestion, answer_suite, report
from evals.lc_vs_rag import ASK_SUFFIX, file_name
from evals.scoring import substring_match


@dataclass(frozen=True)
class Probe:
    """One question with its gold paragraph at `position` among `documents`."""

    item: QAItem
    position: int
    documents: tuple[Paragraph, ...]


@dataclass(frozen=True)
class Answer:
    config: str
    model: str
    question_id: str
    position: int
    documents: int
    answer: str
    gold: list[str]
    score: float
    error: str | None = None

    @property
    def key(self) -> str:
        return f"{self.config}|{self.model}|{self.question_id}|{self.position}|{self.documents}"


def probes(
    count: int,
    documents: int,
    positions: Sequence[int],
    paragraph_tokens: int,
    count_tokens: Callable[[str], int],
    seed: int,
) -> list[Probe]:
    """`count` questions, each with the same distractors at every position of its gold paragraph."""
    rng = random.Random(seed)
    items = [i for i in squad() if count_tokens(i.paragraphs[0].text) <= paragraph_tokens]
    by_title = {item.paragraphs[0].title: item.paragraphs[0] for item in items}
    result = []
    for item in rng.sample(items, min(count, len(items))):
        (gold,) = item.paragraphs
        article = gold.title.rsplit(" (", 1)[0]
        others = [p for title, p in by_title.items() if title.rsplit(" (", 1)[0] != article]
        distractors = rng.sample(others, documents - 1)
        for position in positions:
            placed = (*distractors[:position], gold, *distractors[position:])
            result.append(Probe(item, position, placed))
    return result


def probe_key(config: str, model: str, probe: Probe) -> str:
    return f"{config}|{model}|{probe.item.id}|{probe.position}|{len(probe.documents)}"


def asked(probe: Probe) -> LcQuestion:
    files = [(file_name(p.title), p.text) for p in probe.documents]
    name = f"position-{probe.item.id[:12]}-{probe.position}"
    return LcQuestion(name, files, probe.item.question.strip() + ASK_SUFFIX)


def score(config: str, model: str, probe: Probe, reply: Reply) -> Answer:
    answers = probe.item.answers
    value = max(substring_match(reply.text, gold) for gold in answers) if reply.error is None else 0.0
    return Answer(
        config, model, probe.item.id, probe.position, len(probe.documents), reply.text, list(answers),
        value, reply.error,
    )  # fmt: skip


def summary(answers: Sequence[Answer]) -> list[dict[str, Any]]:
    """One row per (model, config): accuracy with its interval at each position, and the gap."""
    rows = []
    for model, config in dict.fromkeys((a.model, a.config) for a in answers):
        mine = [a for a in answers if a.model == model and a.config == config]
        positions = {}
        for position in sorted({a.position for a in mine}):
            scores = [a.score for a in mine if a.position == position]
            low, high = bootstrap_ci(scores)
            positions[position] = {"accuracy": 100 * statistics.fmean(scores), "ci": (100 * low, 100 * high)}
        accuracies = [p["accuracy"] for p in positions.values()]
        rows.append(
            {
                "model": model,
                "config": config,
                "questions": len({a.question_id for a in mine}),
                "positions": positions,
                "average": statistics.fmean(accuracies),
                "gap": max(accuracies) - min(accuracies),
            }
        )
    return rows


def markdown(rows: Sequence[dict[str, Any]]) -> str:
    positions = sorted({p for row in rows for p in row["positions"]})
    lines = [
        "| model | config | questions | " + " | ".join(f"gold at {p + 1}" for p in positions)
        + " | average | max - min |",
        "|---|---|---:|" + "---|" * len(positions) + "---:|---:|",
    ]  # fmt: skip
    for row in rows:
        cells = " | ".join(
            f"{row['positions'][p]['accuracy']:.0f} [{row['positions'][p]['ci'][0]:.0f}, "
            f"{row['positions'][p]['ci'][1]:.0f}]"
            if p in row["positions"]
            else "-"
            for p in positions
        )
        lines.append(
            f"| {row['model']} | {row['config']} | {row['questions']} | {cells} | {row['average']:.1f} | "
            f"{row['gap']:.1f} |"
        )
    return "\n".join(lines)


def plot(rows: Sequence[dict[str, Any]], path: Path) -> None:
    with accuracy_plot(
        path, "Accuracy by gold position (SmolLM2-135M)", "gold paragraph position", "substring accuracy (%)"
    ) as axes:
        for row in rows:
            positions = sorted(row["positions"])
            axes.plot([p + 1 for p in positions], [row["positions"][p]["accuracy"] for p in positions],
                      marker="o", label=f"{row['model']} {row['config']}")  # fmt: skip


def main() -> None:
    parser = eval_parser(__doc__)
    add_server_options(parser)
    parser.add_argument("--questions", type=int, default=20)
    parser.add_argument("--documents", type=int, default=10, help="Paragraphs per collection.")
    parser.add_argument("--positions", type=int, nargs="+", default=None, help="0-based (default: 5 spread).")
    parser.add_argument("--paragraph-tokens", type=int, default=200, help="Longest paragraph used.")
    parser.add_argument("--models", nargs="+", default=[BASE], help=f"'{BASE}' and/or served adapters.")
    parser.add_argument(
        "--configs", nargs="+", type=config_argument, default=["none"], help="e.g. none knorm-0.5"
    )
    parser.add_argument("--max-tokens", type=int, default=24)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="6 questions, 5 documents, 3 positions.")
    args = parser.parse_args()
    if args.quick:
        args.questions, args.documents, args.positions = min(args.questions, 6), 5, [0, 2, 4]
    last = args.documents - 1
    positions = args.positions or sorted({0, last // 4, last // 2, 3 * last // 4, last})
    if not all(0 <= p < args.documents for p in positions):
        parser.error(f"--positions must be between 0 and {last} (--documents {args.documents}).")

    count = token_counter(args.model)
    work = probes(args.questions, args.documents, positions, args.paragraph_tokens, count, args.seed)
    answers = answer_suite(args, "position", work, asked, probe_key, score, Answer, args.configs, args.models)
    rows = summary(answers)
    report(args.out, "position", rows, markdown(rows), lambda path: plot(rows, path))


if __name__ == "__main__":
    main()
