"""What the evals share: their command-line basics, bootstrap intervals and the accuracy plot's frame."""

from __future__ import annotations

import argparse
import random
import statistics
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def eval_parser(doc: str | None) -> argparse.ArgumentParser:
    """A parser with the eval's docstring as help, `--model` and `--out`."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=None, help="Model folder (default: the bundled one).")
    parser.add_argument("--out", type=Path, default=Path("out/evals"))
    return parser


def bootstrap_ci(values: list[float], seed: int = 0, rounds: int = 1000) -> tuple[float, float]:
    """The 95 % bootstrap interval of the mean of `values` (resampled with replacement)."""
    return stratified_bootstrap_ci([values], seed, rounds)


def stratified_bootstrap_ci(
    groups: list[list[float]], seed: int = 0, rounds: int = 1000
) -> tuple[float, float]:
    """The 95 % bootstrap interval of the mean of the groups' means, each group resampled on its own (so
    every group, a benchmark's task say, keeps its weight)."""
    rng = random.Random(seed)
    means = sorted(
        statistics.fmean(statistics.fmean(rng.choices(group, k=len(group))) for group in groups)
        for _ in range(rounds)
    )
    return means[int(0.025 * rounds)], means[int(0.975 * rounds) - 1]


@contextmanager
def accuracy_plot(path: Path, title: str, xlabel: str, ylabel: str, legend: str = "best") -> Iterator[Any]:
    """Axes for accuracy curves (0-100 %); labelled, titled and saved as a PNG at `path` on exit."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 4))
    yield axes
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    axes.set_ylim(-2, 102)
    axes.legend(loc=legend)
    axes.set_title(title)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
