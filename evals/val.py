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
from pathlib import Path
from typing import Any

from evals.api import add_server_options
from evals.common import config_argument, eval_parser
from evals.lc_suite import (
    BASE,
    Probe,
    ProbeAnswer,
    answer_suite,
    lc_prompt_counter,
    probe_answer,
    probe_key,
    probe_question,
    report,
)
from evals.val_tasks import TASKS, generate


def summary(answers: Sequence[ProbeAnswer]) -> list[dict[str, Any]]:
    """One row per (model, config, task, length): the score % per depth bin, its mean and the gap."""
    rows = []
    for model, config, task, length in dict.fromkeys((a.model, a.config, a.task, a.length) for a in answers):
        mine = [a for a in answers if (a.model, a.config, a.task, a.length) == (model, config, task, length)]
        bins = {
            int(b): 100 * statistics.fmean(a.score for a in mine if a.place == b)
            for b in sorted({a.place for a in mine if a.place is not None})
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
    parser.add_argument(
        "--configs", nargs="+", type=config_argument, default=["none"], help="e.g. none knorm-0.5"
    )
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--quick", action="store_true", help="2K tokens, 3 bins, 1 sample.")
    args = parser.parse_args()
    if args.quick:
        args.lengths, args.bins, args.samples = [2000], 3, 1

    count = lc_prompt_counter(args)
    probes = []
    for task in args.tasks:
        for length in args.lengths:
            for b in range(args.bins):
                for seed in range(args.samples):
                    depth = (b + random.Random(f"{task}|{length}|{b}|{seed}").random()) / args.bins
                    probes.append(Probe(generate(task, length, depth, seed, count), float(b)))
    answers = answer_suite(
        args, "val", probes, probe_question, probe_key, probe_answer, ProbeAnswer, args.configs, args.models
    )
    rows = summary(answers)
    report(args.out, "val", rows, markdown(rows, args.bins), lambda path: plot(rows, args.bins, path))


if __name__ == "__main__":
    main()
