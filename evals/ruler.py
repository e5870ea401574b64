"""RULER on lcrag's in-vLLM KV eviction through a server's HTTP API, in the protocol of kvpress's leaderboard:
RULER's 13 tasks (`evals.ruler_tasks`) at the served model's context lengths, each policy at each
compression ratio, scored with RULER's string_match_all / string_match_part.

Every sample is a one-document collection (the task's instructions and haystack) and a question asked in
`lc` mode, under `none`, each policy at each ratio with the question inside the compression, and each
query-agnostic policy also with it outside, as a cached context (`evals.lc_suite`).
Scores are averaged per task, then over tasks (RULER's average), with bootstrap 95 % intervals. Writes
ruler.json, ruler.md (average and per-task tables) and ruler.png (score vs ratio per policy).

    python -m evals.ruler --out out/evals                       # 13 tasks x 4K and 7K: hours on 2 cores
    python -m evals.ruler --quick --out out/evals               # 2K tokens, one sample, a few minutes
    python -m evals.ruler --lengths 4000 --samples 2 --policies snapkv kvzip --ratios 0.5 0.875
    python -m evals.ruler --lengths 4000 --configs none snapkv-0.5 "cache:kvzip[chunk=8]-0.875"
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from compression.spec import parse_config
from evals.api import add_server_options
from evals.common import accuracy_plot, config_argument, eval_parser, stratified_bootstrap_ci
from evals.lc_suite import (
    Probe,
    ProbeAnswer,
    answer_suite,
    configurations,
    lc_prompt_counter,
    probe_answer,
    probe_key,
    probe_question,
    query_agnostic,
    report,
)
from evals.ruler_tasks import TASKS, generate

DEFAULT_POLICIES = ["snapkv", "chunkkv", "kvzip", "expected_attention", "knorm"]
DEFAULT_RATIOS = [0.25, 0.5, 0.75, 0.875]
QUICK_CONFIGS = ["none", "snapkv-0.75", "cache:kvzip-0.75"]


def summary(answers: Sequence[ProbeAnswer], tasks: Sequence[str]) -> list[dict[str, Any]]:
    """One row per (config, length): RULER's average over tasks with its interval, and each task's score."""
    rows = []
    for config, length in dict.fromkeys((a.config, a.length) for a in answers):
        mine = [a for a in answers if a.config == config and a.length == length]
        by_task = {
            task: [a.score for a in mine if a.task == task]
            for task in tasks
            if any(a.task == task for a in mine)
        }
        per_task = {task: 100 * statistics.fmean(scores) for task, scores in by_task.items()}
        low, high = stratified_bootstrap_ci(list(by_task.values()))
        rows.append(
            {
                "config": config,
                "length": length,
                "samples": len(mine),
                "failed": sum(a.error is not None for a in mine),
                "average": statistics.fmean(per_task.values()),
                "ci": (100 * low, 100 * high),
                "tasks": per_task,
            }
        )
    return rows


def markdown(rows: Sequence[dict[str, Any]], tasks: Sequence[str]) -> str:
    shown = [task for task in tasks if any(task in row["tasks"] for row in rows)]
    lines = [
        "| config | length | samples | average % [95 % CI] | " + " | ".join(shown) + " |",
        "|---|---:|---:|---|" + "---:|" * len(shown),
    ]
    for row in rows:
        failed = f" ({row['failed']} failed)" if row["failed"] else ""
        scores = " | ".join(f"{row['tasks'][task]:.0f}" if task in row["tasks"] else "-" for task in shown)
        lines.append(
            f"| {row['config']} | {row['length']} | {row['samples']}{failed} | {row['average']:.1f} "
            f"[{row['ci'][0]:.1f}, {row['ci'][1]:.1f}] | {scores} |"
        )
    return "\n".join(lines)


def plot(rows: Sequence[dict[str, Any]], path: Path) -> None:
    """RULER's average vs compression ratio, a curve per policy (cached: question outside) and length."""
    with accuracy_plot(
        path, "RULER vs KV compression (SmolLM2-135M)", "compression ratio", "RULER average (%)"
    ) as axes:
        for length in sorted({row["length"] for row in rows}):
            baseline = next(
                (row["average"] for row in rows if row["config"] == "none" and row["length"] == length), None
            )
            curves: dict[str, list[tuple[float, float]]] = {}
            for row in (row for row in rows if row["length"] == length and row["config"] != "none"):
                spec, cached = parse_config(row["config"])
                assert spec is not None
                name = f"{spec.policy_text} cached" if cached else spec.policy_text
                curves.setdefault(name, []).append((spec.ratio, row["average"]))
            for name, points in curves.items():
                points = sorted(([(0.0, baseline)] if baseline is not None else []) + points)
                style = "--" if name.endswith("cached") else "-"
                axes.plot(*zip(*points, strict=True), style, marker="o", label=f"{name} ({length})")


def main() -> None:
    parser = eval_parser(__doc__)
    add_server_options(parser)
    parser.add_argument("--lengths", type=int, nargs="+", default=[4000, 7000], help="Prompt tokens.")
    parser.add_argument("--samples", type=int, default=4, help="Samples per task and length.")
    parser.add_argument("--tasks", nargs="+", choices=list(TASKS), default=list(TASKS))
    parser.add_argument("--policies", nargs="+", default=DEFAULT_POLICIES)
    parser.add_argument("--ratios", type=float, nargs="+", default=DEFAULT_RATIOS)
    parser.add_argument(
        "--configs",
        nargs="+",
        type=config_argument,
        default=None,
        help="Exact configurations, e.g. none snapkv-0.5 cache:kvzip-0.875 (overrides the two above).",
    )
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument(
        "--quick", action="store_true", help=f"2K tokens, one sample, {' '.join(QUICK_CONFIGS)}."
    )
    args = parser.parse_args()
    if args.quick:
        args.lengths, args.samples, args.configs = [2000], 1, args.configs or QUICK_CONFIGS

    count = lc_prompt_counter(args)
    probes = [
        Probe(generate(task, length, seed, count))
        for length in args.lengths
        for task in args.tasks
        for seed in range(args.samples)
    ]
    answers = answer_suite(
        args, "ruler", probes, probe_question, probe_key, probe_answer, ProbeAnswer,
        args.configs or (lambda http: configurations(args.policies, args.ratios, query_agnostic(http))),
    )  # fmt: skip
    rows = summary(answers, args.tasks)
    report(args.out, "ruler", rows, markdown(rows, args.tasks), lambda path: plot(rows, path))


if __name__ == "__main__":
    main()
