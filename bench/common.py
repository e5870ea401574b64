"""What the benchmarks share: their command line's basics (an in-process engine's, a running server's)."""

from __future__ import annotations

import argparse
from pathlib import Path


def doc_parser(doc: str | None) -> argparse.ArgumentParser:
    """A parser with the benchmark's docstring, as written, as its help."""
    return argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)


def engine_parser(doc: str | None) -> argparse.ArgumentParser:
    """A parser with the benchmark's docstring as help and `--model` (default: the bundled model)."""
    parser = doc_parser(doc)
    parser.add_argument("--model", type=Path, default=None, help="Model folder (default: the bundled one).")
    return parser


def server_parser(doc: str | None) -> argparse.ArgumentParser:
    """A parser with the benchmark's docstring as help, `--base-url` and `--api-key`."""
    parser = doc_parser(doc)
    parser.add_argument("--base-url", default="http://127.0.0.1:8000")
    parser.add_argument("--api-key", default=None)
    return parser
