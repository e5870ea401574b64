"""What the benchmarks that run an in-process engine share: their command line's basics."""

from __future__ import annotations

import argparse
from pathlib import Path


def engine_parser(doc: str | None) -> argparse.ArgumentParser:
    """A parser with the benchmark's docstring as help and `--model` (default: the bundled model)."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=None, help="Model folder (default: the bundled one).")
    return parser
