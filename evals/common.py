"""What the evals share: their command-line basics, configurations read in either spelling, bootstrap
intervals and the accuracy plot's frame."""

from __future__ import annotations

import argparse
import random
import statistics
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


def eval_parser(doc: str | None) -> argparse.ArgumentParser:
    """A parser with the eval's docstring as help, `--model` and `--out`."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=None, help="Model folder (default: the bundled one).")
    parser.add_argument("--out", type=Path, default=Path("out/evals"))
    return parser


def config_argument(text: str) -> str:
    """A `--configs` value (`compression.spec.parse_config`, either spelling) in the one spelling; argparse
    reports what is wrong with a bad one."""
    from compression.spec import normal_config

    try:
        return normal_config(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def respelled(kind: Callable[..., T]) -> Callable[..., T]:
    """`kind` for an answers file's lines, with each line's config in the one spelling: an answer stored
    under the older colon spelling (`snapkv:0.5`) keys, and is reused, as the same configuration
    (`snapkv-0.5`); a config that no longer parses stays as written and matches nothing asked now."""
    from compression.spec import normal_config

    spelled: dict[str, str] = {}

    def respell(config: str) -> str:
        if config not in spelled:
            try:
                spelled[config] = normal_config(config)
            except ValueError:
                spelled[config] = config
        return spelled[config]

    def read(**fields: Any) -> T:
        if isinstance(fields.get("config"), str):
            fields["config"] = respell(fields["config"])
        return kind(**fields)

    return read


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
