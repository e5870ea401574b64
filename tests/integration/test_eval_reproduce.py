"""`lcrag eval reproduce --quick` end to end on the tiny model: the training collection, four adapters
trained by `lcrag finetune`, the kv-retrieval check, then position, val and collection against one server
holding every adapter; report.md with its findings, tables and step times; a rerun trains nothing again."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


def test_reproduce_trains_evaluates_and_reports(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from evals import reproduce

    argv = ["reproduce", "--quick", "--steps", "2", "--model", str(tiny_model_dir), "--context-tokens", "900",
            "--serve-args", "--max-model-len 2048 --kv-cache-gb 1", "--out", str(tmp_path)]  # fmt: skip
    monkeypatch.setattr(sys, "argv", argv)
    reproduce.main()
    adapters = sorted(p.name for p in (tmp_path / "data" / "adapters").iterdir())
    assert adapters == sorted(a.name for a in reproduce.ADAPTERS)
    report = (tmp_path / "report.md").read_text()
    headings = ["## Findings", "## Adapters (from their cards)", "(a) kv_retrieval", "(b) in2 on VaL",
                "(c) held-out cloze accuracy", "## (a, b) Lost in the middle", "## (b) VaL probing",
                "## (c) Held-out", "| repro-multidoc-ca | multidoc | snapkv-0.75 | 2 |"]  # fmt: skip
    assert [heading for heading in headings if heading not in report] == []
    position = json.loads((tmp_path / "position" / "position.json").read_text())["summary"]
    assert {row["model"] for row in position} == {tiny_model_dir.name, "repro-kv-retrieval", "repro-in2"}
    assert "position gap (max - min)" in report and "base: average" in report
    collection = json.loads((tmp_path / "collection-repro-multidoc" / "collection.json").read_text())
    assert {row["mode"] for row in collection["summary"]} == {"rag@5", "lc", "lc:kvzip-0.75", "auto"}
    assert "--adapter repro-multidoc" in collection["command"]
    steps = json.loads((tmp_path / "reproduce.steps.json").read_text())["times_s"]
    assert {"train-repro-in2", "position", "val", "collection-base"} <= set(steps)

    capsys.readouterr()
    reproduce.main()  # everything ingested, trained and answered: no step runs again, no server starts
    assert "[reproduce]" not in capsys.readouterr().out
    assert json.loads((tmp_path / "reproduce.steps.json").read_text())["times_s"] == steps
    assert (tmp_path / "report.md").read_text() == report
