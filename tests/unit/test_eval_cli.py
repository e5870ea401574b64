"""`lcrag eval SUITE` runs a suite's own command line; an unknown suite is refused with the list."""

import pytest
from typer.testing import CliRunner

from lcrag.cli import EVAL_SUITES, app


def test_an_unknown_suite_is_refused_with_the_available_ones() -> None:
    result = CliRunner().invoke(app, ["eval", "nope"])
    assert result.exit_code == 1
    assert (
        "unknown eval suite 'nope'; available: cache-reuse, collection, compression, kv-retrieval, lc-vs-rag"
        in result.output
    )


@pytest.mark.parametrize("suite", sorted(EVAL_SUITES))
def test_each_suite_gets_its_own_options(suite: str) -> None:
    result = CliRunner().invoke(app, ["eval", suite, "--help"])  # the suite's argparse prints and exits 0
    assert result.exit_code == 0 and f"usage: lcrag eval {suite}" in result.output
    assert "--out" in result.output
