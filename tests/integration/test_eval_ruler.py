"""`lcrag eval ruler` end to end against the tiny server: every configuration answers every sample through
the HTTP API (question inside and outside the compression), the report has its tables, JSON and plot, and a
rerun sends nothing again (answers are cached). A config in the older colon spelling is read, and reported,
cached and reused in the dash spelling."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tests.conftest import RunningServer

pytestmark = pytest.mark.integration


def test_ruler_reports_every_configuration_and_reruns_from_its_cache(
    tiny_server: RunningServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from evals import ruler

    argv = ["ruler", "--base-url", tiny_server.base_url, "--api-key", "test-key", "--lengths", "400",
            "--samples", "1", "--tasks", "niah_single_1", "vt", "niah_multikey_2", "--max-tokens", "4",
            "--configs", "none", "snapkv-0.5", "cache:knorm:0.5", "--out", str(tmp_path)]  # fmt: skip
    monkeypatch.setattr(sys, "argv", argv)
    ruler.main()
    report = json.loads((tmp_path / "ruler.json").read_text())
    rows = {row["config"]: row for row in report["summary"]}
    assert set(rows) == {"none", "snapkv-0.5", "cache:knorm-0.5"}  # the old spelling read, written anew
    assert all(row["samples"] == 3 and row["failed"] == 0 for row in rows.values())
    assert all(set(row["tasks"]) == {"niah_single_1", "vt", "niah_multikey_2"} for row in rows.values())
    answers = [json.loads(line) for line in (tmp_path / "ruler.answers.jsonl").read_text().splitlines()]
    assert len(answers) == 9
    for answer in answers:
        if answer["config"] == "none":
            assert answer["kv_tokens_after"] is None
        else:
            assert 0 < answer["kv_tokens_after"] < answer["kv_tokens_before"]
    assert {a["cache"] for a in answers if a["config"] == "cache:knorm-0.5"} == {"built"}
    assert "| cache:knorm-0.5 | 400 | 3 |" in (tmp_path / "ruler.md").read_text()
    assert (tmp_path / "ruler.png").stat().st_size > 0
    monkeypatch.setattr(sys, "argv", [arg.replace("knorm:", "knorm-") for arg in argv])
    ruler.main()  # everything cached, whichever the spelling: no request is sent again
    assert len((tmp_path / "ruler.answers.jsonl").read_text().splitlines()) == 9
