"""`lcrag eval position` end to end against the tiny server: every question with its gold paragraph at every
position, in every configuration, through the HTTP API; the report's table and plot; a rerun from cache."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tests.conftest import RunningServer

pytestmark = pytest.mark.integration


def test_position_asks_every_question_at_every_position(
    tiny_server: RunningServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from evals import position

    argv = ["position", "--base-url", tiny_server.base_url, "--api-key", "test-key", "--questions", "2",
            "--documents", "3", "--positions", "0", "2", "--paragraph-tokens", "70", "--max-tokens", "4",
            "--configs", "none", "knorm-0.5", "--out", str(tmp_path)]  # fmt: skip
    monkeypatch.setattr(sys, "argv", argv)
    position.main()
    rows = json.loads((tmp_path / "position.json").read_text())["summary"]
    assert [(row["model"], row["config"]) for row in rows] == [
        (tiny_server.model, "none"),
        (tiny_server.model, "knorm-0.5"),
    ]
    assert all(row["questions"] == 2 and set(row["positions"]) == {"0", "2"} for row in rows)
    assert all(row["gap"] >= 0 for row in rows)
    assert "gold at 1 | gold at 3 |" in (tmp_path / "position.md").read_text()
    assert (tmp_path / "position.png").stat().st_size > 0
    position.main()
    assert len((tmp_path / "position.answers.jsonl").read_text().splitlines()) == 8
