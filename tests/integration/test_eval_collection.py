"""`lcrag eval collection` end to end against the tiny server: held-out questions of every kind from a real
collection, asked in every mode through the HTTP API; the report; the needle copy removed; a rerun from
cache; a collection too small to hold questions out."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bench.corpus import TOWNS
from tests.conftest import RunningServer

pytestmark = pytest.mark.integration


def town_file(
    copy: int, name: str, trade: str, festival: str, landmark: str
) -> tuple[str, tuple[str, bytes, str]]:
    text = (
        f"In {1800 + copy}, the merchants of {name} sold {trade} during {festival}. "
        f"The council of {name} repaired {landmark} in the year {1850 + copy}. "
        f"Travellers said that {name} smelled of {trade}."
    )
    return ("files", (f"{name.lower()}.txt", text.encode(), "text/plain"))


@pytest.fixture
def towns(tiny_server: RunningServer) -> Iterator[tuple[httpx.Client, str]]:
    with httpx.Client(base_url=tiny_server.base_url, headers=tiny_server.headers(), timeout=300) as http:
        http.delete("/v1/collections/eval-towns")
        http.post("/v1/collections", json={"name": "eval-towns"}).raise_for_status()
        files = [town_file(i, *town) for i, town in enumerate(TOWNS[:5])]
        http.post("/v1/collections/eval-towns/documents", files=files).raise_for_status()
        yield http, "eval-towns"
        http.delete("/v1/collections/eval-towns")


def run_suite(tiny_server: RunningServer, out: Path, monkeypatch: pytest.MonkeyPatch, *extra: str) -> None:
    from evals import collection

    argv = ["collection", "--base-url", tiny_server.base_url, "--api-key", "test-key", "--questions", "2",
            "--top-k", "2", "--kv", "knorm-0.5", "--out", str(out), *extra]  # fmt: skip
    monkeypatch.setattr(sys, "argv", argv)
    collection.main()


def test_every_kind_is_asked_in_every_mode_and_cached(
    tiny_server: RunningServer,
    towns: tuple[httpx.Client, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    http, name = towns
    run_suite(tiny_server, tmp_path, monkeypatch, name)
    report = json.loads((tmp_path / "collection.json").read_text())
    rows = report["summary"]
    assert {(row["dataset"], row["mode"]) for row in rows} == {
        (kind, mode)
        for kind in ("cloze", "quote", "needle")
        for mode in ("rag@2", "lc", "lc:knorm-0.5", "auto")
    }
    assert all(row["questions"] == 2 and row["failed"] == 0 for row in rows)
    lc_rows = [row for row in rows if row["mode"].startswith("lc")]
    assert all(row["kv_tokens"] and row["prompt_tokens"] for row in lc_rows)
    compressed = {row["dataset"]: row["kv_tokens"] for row in rows if row["mode"] == "lc:knorm-0.5"}
    plain = {row["dataset"]: row["kv_tokens"] for row in rows if row["mode"] == "lc"}
    assert all(compressed[kind] < plain[kind] for kind in plain)  # eviction held fewer tokens
    assert report["command"].startswith("python -m evals.collection")
    assert "| needle | lc:knorm-0.5 | 2 |" in (tmp_path / "collection.md").read_text()
    assert (tmp_path / "collection.png").stat().st_size > 0
    names = [c["name"] for c in http.get("/v1/collections").json()["data"]]
    assert "eval-towns-needles" not in names  # the copy with planted needles is gone
    answers = tmp_path / f"collection-{name}.answers.jsonl"
    assert len(answers.read_text().splitlines()) == 24
    run_suite(tiny_server, tmp_path, monkeypatch, name)
    assert len(answers.read_text().splitlines()) == 24  # nothing asked again


def test_a_collection_too_small_to_hold_questions_out_is_refused_clearly(
    tiny_server: RunningServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with httpx.Client(base_url=tiny_server.base_url, headers=tiny_server.headers(), timeout=300) as http:
        http.delete("/v1/collections/eval-small")
        http.post("/v1/collections", json={"name": "eval-small"}).raise_for_status()
        http.post("/v1/collections/eval-small/documents", files=[town_file(0, *TOWNS[0])]).raise_for_status()
        try:
            with pytest.raises(SystemExit, match="too small to hold questions out"):
                run_suite(tiny_server, tmp_path, monkeypatch, "eval-small")
            with pytest.raises(SystemExit, match="no-such-collection"):
                run_suite(tiny_server, tmp_path, monkeypatch, "no-such-collection")
        finally:
            http.delete("/v1/collections/eval-small")
