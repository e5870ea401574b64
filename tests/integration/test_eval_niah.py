"""`lcrag eval niah` end to end against the tiny server: every (depth, length) cell answered in every
configuration through the HTTP API, the depth x length tables and heatmaps written, a rerun answered from
the cache."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tests.conftest import RunningServer

pytestmark = pytest.mark.integration


def test_niah_fills_every_cell_of_every_configuration(
    tiny_server: RunningServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from evals import niah

    argv = ["niah", "--base-url", tiny_server.base_url, "--api-key", "test-key", "--lengths", "250", "400",
            "--depths", "0", "1", "--seeds", "1", "--max-tokens", "4", "--configs", "none", "cache:knorm-0.5",
            "--out", str(tmp_path)]  # fmt: skip
    monkeypatch.setattr(sys, "argv", argv)
    niah.main()
    rows = json.loads((tmp_path / "niah.json").read_text())["summary"]
    assert [row["config"] for row in rows] == ["none", "cache:knorm-0.5"]
    for row in rows:
        assert {(cell["depth"], cell["length"]) for cell in row["cells"]} == {
            (0, 250),
            (0, 400),
            (1, 250),
            (1, 400),
        }
        assert all(cell["accuracy"] in (0.0, 100.0) for cell in row["cells"])  # one probe per cell
    table = (tmp_path / "niah.md").read_text()
    assert "| depth | 250 tokens | 400 tokens |" in table and "**cache:knorm-0.5**" in table
    assert (tmp_path / "niah.png").stat().st_size > 0
    niah.main()
    assert len((tmp_path / "niah.answers.jsonl").read_text().splitlines()) == 8
