"""`lcrag eval lc-vs-rag` end to end against the tiny server: every mode answers every question through the
HTTP API, the report has its table, JSON and plot, and a rerun answers nothing again (answers are cached)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tests.conftest import RunningServer

pytestmark = pytest.mark.integration


def test_lc_vs_rag_reports_every_mode_and_reruns_from_its_cache(
    tiny_server: RunningServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from evals import lc_vs_rag

    argv = ["lc_vs_rag", "--base-url", tiny_server.base_url, "--api-key", "test-key", "--datasets", "squad",
            "--questions", "4", "--context-tokens", "300", "--top-k", "2", "--kv", "knorm-0.5",
            "--max-tokens", "4", "--out", str(tmp_path)]  # fmt: skip
    monkeypatch.setattr(sys, "argv", argv)
    lc_vs_rag.main()
    report = json.loads((tmp_path / "lc_vs_rag.json").read_text())
    rows = {row["mode"]: row for row in report["summary"]}
    assert set(rows) == {"rag@2", "lc", "lc:knorm-0.5", "auto"}
    assert all(row["questions"] == 4 and row["failed"] == 0 for row in rows.values())
    assert rows["lc"]["kv_tokens"] > rows["lc:knorm-0.5"]["kv_tokens"] > 0  # the cache holds less
    assert rows["auto"]["routes"] and sum(rows["auto"]["routes"].values()) == 4
    assert "| squad | lc:knorm-0.5 | 4 |" in (tmp_path / "lc_vs_rag.md").read_text()
    assert (tmp_path / "lc_vs_rag.png").stat().st_size > 0
    answers = (tmp_path / "lc_vs_rag.answers.jsonl").read_text().splitlines()
    assert len(answers) == 16 and {json.loads(line)["cache"] for line in answers} >= {"built", "hit"}
    lc_vs_rag.main()  # everything cached: no request is sent again
    assert len((tmp_path / "lc_vs_rag.answers.jsonl").read_text().splitlines()) == 16
