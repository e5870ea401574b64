"""VaL probing (An et al., 2024): how well the model retrieves from every part of a long context, for
document, code and structured contexts and forward, backward and bi-directional retrieval
(`evals.val_tasks`), through a server's HTTP API in `lc` mode; base model vs adapters (the `in2` adapter
was trained for exactly this), under any eviction configuration (`evals.lc_suite`).

The target sits in one of `--bins` equal depth bins (uniform within its bin); scores per (model, config,
task, bin) with the max - min gap across bins. Writes val.json, val.md and val.png (a panel per task).

    python -m evals.val --out out/evals                                   # 3 tasks x 5 bins x 4 samples
    python -m evals.val --quick --out out/evals                           # a few minutes
    python -m evals.val --base-url http://127.0.0.1:8000 --models base in2-lora
"""

from __future__ import annotations

import random
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evals.api import (
    AnswerCache,
    Reply,
    add_server_options,
    model_dir,
    served_model,
    suite_client,
    token_counter,
    write_report,
)
from evals.common import eval_parser
from evals.lc_suite import LcQuestion, answer_all
from evals.ruler_tasks import Sample
from evals.val_tasks import TASKS, generate
from rag.context import LC_DOCUMENT_HEADER_TOKENS, LC_TEMPLATE_TOKENS

BASE = "base"


@dataclass(frozen=True)
class Probe:
    bin: int
    sample: Sample


@dataclass(frozen=True)
class Answer:
    config: str
    model: str
    task: str
    length: int
    bin: int
    seed: int
    answer: str
    expected: list[str]
    score: float
    error: str | None = None

    @property
    def key(self) -> str:
        return f"{self.config}|{self.model}|{self.task}|{self.length}|{self.bin}|{self.seed}"


def probe_key(config: str, model: str, probe: Probe) -> str:
    sample = probe.sample
    return f"{config}|{model}|{sample.task}|{sample.length}|{probe.bin}|{sample.seed}"


def asked(probe: Probe) -> LcQuestion:
    sample = probe.sample
    name = f"val-{sample.task.removeprefix('val_')}-{sample.length}-{probe.bin}-{sample.seed}"
    return LcQuestion(name, [("context.txt", sample.context)], sample.question)


def score(config: str, model: str, probe: Probe, reply: Reply) -> Answer:
    sample = probe.sample
    value = sample.score(reply.text) if reply.error is None else 0.0
    return Answer(
        config, model, sample.task, sample.length, probe.bin, sample.seed, reply.text, list(sample.answers),
        value, reply.error,
    )  # fmt: skip


def summary(answers: Sequence[Answer]) -> list[dict[str, Any]]:
    """One row per (model, config, task, length): the score % per depth bin, its mean and the gap."""
    rows = []
    for model, config, task, length in dict.fromkeys((a.model, a.config, a.task, a.length) for a in answers):
        mine = [a for a in answers if (a.model, a.config, a.task, a.length) == (model, config, task, length)]
        bins = {
            b: 100 * statistics.fmean(a.score for a in mine if a.bin == b)
            for b in sorted({a.bin for a in mine})
        }
        rows.append(
            {
                "model": model,
                "config": config,
                "task": task,
                "length": length,
                "samples": len(mine),
                "bins": bins,
                "average": statistics.fmean(bins.values()),
                "gap": max(bins.values()) - min(bins.values()),
            }
        )
    return rows


def markdown(rows: Sequence[dict[str, Any]], bins: int) -> str:
    edges = [f"{100 * b // bins}-{100 * (b + 1) // bins} %" for b in range(bins)]
    lines = [
        "| task | model | config | length | samples | " + " | ".join(edges) + " | average | max - min |",
        "|---|---|---|---:|---:|" + "---:|" * bins + "---:|---:|",
    ]
    for row in rows:
        cells = " | ".join(f"{row['bins'][b]:.0f}" if b in row["bins"] else "-" for b in range(bins))
        lines.append(
            f"| {row['task']} | {row['model']} | {row['config']} | {row['length']} | {row['samples']} | "
            f"{cells} | {row['average']:.1f} | {row['gap']:.1f} |"
        )
    return "\n".join(lines)


def plot(rows: Sequence[dict[str, Any]], bins: int, path: Path) -> None:
    """A panel per task: score by depth bin, a line per (model, config, length)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(dict.fromkeys(row["task"] for row in rows))
    figure, panels = plt.subplots(1, len(tasks), figsize=(4 * len(tasks), 3.6), squeeze=False)
    for axes, task in zip(panels[0], tasks, strict=True):
        for row in (row for row in rows if row["task"] == task):
            shown = sorted(row["bins"])
            axes.plot([(b + 0.5) / bins for b in shown], [row["bins"][b] for b in shown], marker="o",
                      label=f"{row['model']} {row['config']} {row['length']}")  # fmt: skip
        axes.set_title(task.removeprefix("val_"))
        axes.set_xlabel("target depth")
        axes.set_ylim(-2, 102)
    panels[0][0].set_ylabel("score (%)")
    panels[0][-1].legend(fontsize=7)
    figure.suptitle("VaL probing by depth (SmolLM2-135M)")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main() -> None:
    parser = eval_parser(__doc__)
    add_server_options(parser)
    parser.add_argument("--tasks", nargs="+", choices=list(TASKS), default=list(TASKS))
    parser.add_argument("--lengths", type=int, nargs="+", default=[4000])
    parser.add_argument("--bins", type=int, default=5, help="Depth bins.")
    parser.add_argument("--samples", type=int, default=4, help="Probes per task, length and bin.")
    parser.add_argument("--models", nargs="+", default=[BASE], help=f"'{BASE}' and/or served adapters.")
    parser.add_argument("--configs", nargs="+", default=["none"])
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--quick", action="store_true", help="2K tokens, 3 bins, 1 sample.")
    args = parser.parse_args()
    if args.quick:
        args.lengths, args.bins, args.samples = [2000], 3, 1

    count_text = token_counter(model_dir(args))
    around = LC_TEMPLATE_TOKENS + LC_DOCUMENT_HEADER_TOKENS

    def counted(text: str) -> int:
        return count_text(text) + around

    probes = []
    for task in args.tasks:
        for length in args.lengths:
            for b in range(args.bins):
                for seed in range(args.samples):
                    depth = (b + random.Random(f"{task}|{length}|{b}|{seed}").random()) / args.bins
                    probes.append(Probe(b, generate(task, length, depth, seed, counted)))
    answers = AnswerCache(args.out / "val.answers.jsonl", Answer, lambda answer: answer.key)
    with suite_client(args, "val") as http, answers.open():
        base = args.adapter or served_model(http)
        runs = [
            (config, base if model == BASE else model) for model in args.models for config in args.configs
        ]
        answer_all(http, answers, probes, asked, runs, probe_key, score, args.max_tokens, "val answers")
    wanted = {probe_key(config, model, probe) for config, model in runs for probe in probes}
    rows = summary([a for key, a in answers.answers.items() if key in wanted])
    table = markdown(rows, args.bins)
    write_report(args.out, "val", rows, table)
    plot(rows, args.bins, args.out / "val.png")
    print(table)
    print(f"\nWrote {args.out}/val.json, .md and .png")


if __name__ == "__main__":
    main()
