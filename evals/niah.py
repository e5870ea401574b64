"""Needle in a haystack on real prose: the depth x length heatmap (Kamradt's test, RULER's niah_single_2: a
7-digit magic number for a key, hidden in the Paul Graham essays), through a server's HTTP API in `lc` mode,
per eviction configuration (`evals.lc_suite`: `none`, `<policy>-<ratio>`, `cache:<policy>-<ratio>`).
Writes niah.json, niah.md (a depth x length table per configuration) and niah.png (the heatmaps).

    python -m evals.niah --out out/evals                                  # 5 depths x 4 lengths x 2 seeds
    python -m evals.niah --quick --out out/evals                          # a few minutes
    python -m evals.niah --configs none cache:kvzip-0.875 snapkv-0.875 --lengths 2000 7000
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from evals.api import add_server_options
from evals.common import config_argument, eval_parser
from evals.lc_suite import (
    Probe,
    ProbeAnswer,
    answer_suite,
    lc_prompt_counter,
    probe_answer,
    probe_key,
    probe_question,
    report,
)
from evals.ruler_tasks import NIAH, generate


def grid(answers: Sequence[ProbeAnswer], config: str) -> dict[tuple[float, int], float]:
    """(depth, length) -> accuracy % of `config`."""
    cells: dict[tuple[float, int], list[float]] = {}
    for answer in (a for a in answers if a.config == config):
        cells.setdefault((answer.place or 0.0, answer.length), []).append(answer.score)
    return {cell: 100 * statistics.fmean(scores) for cell, scores in cells.items()}


def summary(answers: Sequence[ProbeAnswer], configs: Sequence[str]) -> list[dict[str, Any]]:
    rows = []
    for config in configs:
        cells = grid(answers, config)
        if cells:
            rows.append(
                {
                    "config": config,
                    "average": statistics.fmean(cells.values()),
                    "cells": [
                        {"depth": d, "length": n, "accuracy": v} for (d, n), v in sorted(cells.items())
                    ],
                }
            )
    return rows


def axes_of(row: dict[str, Any]) -> tuple[list[float], list[int], dict[tuple[float, int], float]]:
    """A summary row's depths, lengths and (depth, length) -> accuracy."""
    depths = sorted({cell["depth"] for cell in row["cells"]})
    lengths = sorted({cell["length"] for cell in row["cells"]})
    return depths, lengths, {(cell["depth"], cell["length"]): cell["accuracy"] for cell in row["cells"]}


def markdown(rows: Sequence[dict[str, Any]]) -> str:
    parts = []
    for row in rows:
        depths, lengths, value = axes_of(row)
        lines = [
            f"**{row['config']}** (average {row['average']:.1f} %)",
            "",
            "| depth | " + " | ".join(f"{n} tokens" for n in lengths) + " |",
            "|---:|" + "---:|" * len(lengths),
        ]
        for depth in depths:
            cells = " | ".join(f"{value[(depth, n)]:.0f}" if (depth, n) in value else "-" for n in lengths)
            lines.append(f"| {depth:.2f} | {cells} |")
        parts.append("\n".join(lines))
    return "\n\n".join(parts)


def heatmaps(rows: Sequence[dict[str, Any]], path: Path) -> None:
    """One depth x length heatmap per configuration, green = found."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, panels = plt.subplots(
        1, len(rows), figsize=(3.2 * len(rows) + 1, 3.6), squeeze=False, sharey=True, layout="constrained"
    )
    for axes, row in zip(panels[0], rows, strict=True):
        depths, lengths, value = axes_of(row)
        matrix = [[value.get((d, n), float("nan")) for n in lengths] for d in depths]
        image = axes.imshow(matrix, cmap="RdYlGn", vmin=0, vmax=100, aspect="auto")
        axes.set_xticks(range(len(lengths)), [str(n) for n in lengths])
        axes.set_yticks(range(len(depths)), [f"{d:.2f}" for d in depths])
        axes.set_xlabel("prompt tokens")
        axes.set_title(row["config"], fontsize=9)
    panels[0][0].set_ylabel("needle depth")
    figure.colorbar(image, ax=panels[0].tolist(), label="accuracy (%)")
    figure.suptitle("Needle in the essays (SmolLM2-135M)")
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main() -> None:
    parser = eval_parser(__doc__)
    add_server_options(parser)
    parser.add_argument("--task", choices=list(NIAH), default="niah_single_2")
    parser.add_argument("--lengths", type=int, nargs="+", default=[1000, 2000, 4000, 7000])
    parser.add_argument("--depths", type=float, nargs="+", default=[0.0, 0.25, 0.5, 0.75, 1.0])
    parser.add_argument("--seeds", type=int, default=2, help="Probes per cell.")
    parser.add_argument("--configs", nargs="+", type=config_argument, default=["none", "cache:kvzip-0.75"])
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument(
        "--quick", action="store_true", help="1K and 2K tokens, 3 depths, 1 seed, no eviction."
    )
    args = parser.parse_args()
    if args.quick:
        args.lengths, args.depths, args.seeds, args.configs = [1000, 2000], [0.0, 0.5, 1.0], 1, ["none"]

    count = lc_prompt_counter(args)
    probes = [
        Probe(generate(args.task, length, seed, count, depth), depth)
        for length in args.lengths
        for depth in args.depths
        for seed in range(args.seeds)
    ]
    answers = answer_suite(
        args, "niah", probes, probe_question, probe_key, probe_answer, ProbeAnswer, args.configs
    )
    rows = summary(answers, args.configs)
    report(args.out, "niah", rows, markdown(rows), lambda path: heatmaps(rows, path))


if __name__ == "__main__":
    main()
