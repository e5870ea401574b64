"""`lcrag eval val` end to end against the tiny server: every task at every depth bin through the HTTP API,
the report's table and plot, a rerun answered from the cache."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tests.conftest import RunningServer

pytestmark = pytest.mark.integration


def test_val_scores_every_task_at_every_depth_bin(
    tiny_server: RunningServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from evals import val

    argv = ["val", "--base-url", tiny_server.base_url, "--api-key", "test-key", "--lengths", "350",
            "--bins", "2", "--samples", "1", "--max-tokens", "4", "--out", str(tmp_path)]  # fmt: skip
    monkeypatch.setattr(sys, "argv", argv)
    val.main()
    rows = json.loads((tmp_path / "val.json").read_text())["summary"]
    assert {row["task"] for row in rows} == {"val_document", "val_code", "val_structured"}
    assert all(set(row["bins"]) == {"0", "1"} and row["model"] == tiny_server.model for row in rows)
    assert "| val_code |" in (tmp_path / "val.md").read_text()
    assert (tmp_path / "val.png").stat().st_size > 0
    val.main()
    assert len((tmp_path / "val.answers.jsonl").read_text().splitlines()) == 6
