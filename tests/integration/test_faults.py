"""kill -9 of `lcrag serve` during an upload and during generation, then a restart: the collection lists
exactly the documents whose upload finished, holds no orphan chunk, and answers; no vLLM engine process
outlives the killed server."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bench.corpus import TOWNS, town_paragraph, towns_text
from rag import store as store_module
from rag.ingest import Ingestor
from rag.loaders import load_bytes
from rag.store import Store
from tests.conftest import requests_running, start_server, stop_server, wait_until

pytestmark = pytest.mark.integration

COLLECTION = "faults"


def serve(data_dir: Path, model_dir: Path):
    args = ["--model", str(model_dir), "--max-model-len", "2048", "--data-dir", str(data_dir)]
    return start_server(data_dir, args, model=model_dir.name)


def kill_hard(process) -> None:
    """SIGKILL the server; its vLLM engine process must not outlive it (`parent_death`)."""
    import psutil

    children = psutil.Process(process.pid).children(recursive=True)
    assert children, "the server has no engine process"
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    _, alive = psutil.wait_procs(children, timeout=10)
    assert alive == [], f"left running after the server was killed: {alive}"


def state(base_url: str) -> tuple[list[str], int, int]:
    """(document names, chunks the collection holds, chunks its listed documents account for)."""
    with httpx.Client(base_url=base_url, timeout=60) as client:
        listed = client.get(f"/v1/collections/{COLLECTION}/documents").json()["data"]
        held = client.get(f"/v1/collections/{COLLECTION}").json()["chunks"]
    return sorted(d["name"] for d in listed), held, sum(d["chunks"] for d in listed)


def answers(base_url: str) -> bool:
    body = {
        "model": f"{COLLECTION}@rag",
        "messages": [{"role": "user", "content": "Which town?"}],
        "max_tokens": 4,
    }
    reply = httpx.post(f"{base_url}/v1/chat/completions", json=body, timeout=120)
    return reply.status_code == 200 and reply.json()["lcrag"]["citations"] != []


def plant_leftovers(data_dir: Path, embedder, tokenizer, monkeypatch: pytest.MonkeyPatch) -> None:
    """What a kill between an upload's chunk writes leaves: chunks of a document that has no chunk 0."""
    store = Store.open(path=str(data_dir / "chroma"))
    real_upsert = store_module._upsert

    def killed_before_the_head(collection, records, embeddings) -> None:
        if records[0]["id"].endswith(":0"):
            raise KeyboardInterrupt
        real_upsert(collection, records, embeddings)

    with monkeypatch.context() as patch:
        patch.setattr(store_module, "_upsert", killed_before_the_head)
        with pytest.raises(KeyboardInterrupt):
            Ingestor(store, embedder, tokenizer, chunk_tokens=64).add(
                COLLECTION, load_bytes("half.txt", towns_text().encode())
            )
    store.close()


def kill_while_busy(process, server, killed_during: str) -> None:
    """Send a long upload or a long generation, and SIGKILL the server while it works on it: once the
    upload's whole body is sent (embedding hundreds of chunks takes far longer), or once the engine runs
    the generation (1,700 tokens)."""
    if killed_during == "upload":
        big = ("\n\n".join(town_paragraph(*TOWNS[i % len(TOWNS)]) for i in range(1500))).encode()
        url = f"{server.base_url}/v1/collections/{COLLECTION}/documents"
        encoded = httpx.Request("POST", url, files=[("files", ("big.txt", big, "text/plain"))])
        body, sent = encoded.read(), threading.Event()

        def chunks() -> Iterator[bytes]:
            yield from (body[start : start + 65536] for start in range(0, len(body), 65536))
            sent.set()

        request = {"content": chunks(), "headers": {"content-type": encoded.headers["content-type"]}}
        busy, what = sent.is_set, "the upload's body to be sent"
    else:
        url, request = f"{server.base_url}/v1/chat/completions", {"json": {
            "model": server.model, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1700,
            "ignore_eos": True}}  # fmt: skip
        busy, what = (lambda: requests_running(server.base_url) >= 1), "the generation to run"
    outcome: list[object] = []
    in_flight = threading.Thread(target=_send, args=(outcome, url), kwargs=request)
    in_flight.start()
    wait_until(busy, 60, what)
    kill_hard(process)
    in_flight.join(timeout=30)
    assert isinstance(outcome[0], httpx.TransportError), outcome  # killed while it ran


def test_kill_9_during_an_upload_then_during_generation_leaves_exactly_the_finished_uploads(
    tmp_path: Path,
    tiny_model_dir: Path,
    embedder,
    tokenizer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each restart finds only arlen.txt, whole; after the upload's kill it removes the leftover chunks."""
    process, server = serve(tmp_path, tiny_model_dir)
    try:
        with httpx.Client(base_url=server.base_url, timeout=120) as client:
            assert client.post("/v1/collections", json={"name": COLLECTION}).status_code == 201
            files = [("files", ("arlen.txt", town_paragraph(*TOWNS[0]).encode(), "text/plain"))]
            assert client.post(f"/v1/collections/{COLLECTION}/documents", files=files).status_code == 200
        for killed_during in ("upload", "generation"):
            kill_while_busy(process, server, killed_during)
            if killed_during == "upload":
                plant_leftovers(tmp_path, embedder, tokenizer, monkeypatch)  # a kill between chunk writes
            process, server = serve(tmp_path, tiny_model_dir)
            removed = "chunks an interrupted ingest left in collection faults" in server.log_path.read_text()
            assert removed == (killed_during == "upload"), killed_during
            names, held, listed_chunks = state(server.base_url)
            assert names == ["arlen.txt"] and held == listed_chunks  # no orphan chunk, no half document
            assert answers(server.base_url)
    finally:
        if process.poll() is None:
            stop_server(process)


def _send(outcome: list[object], url: str, **request: object) -> None:
    """POST and keep the status, or the transport error a killed server gives."""
    try:
        outcome.append(httpx.post(url, timeout=300, **request).status_code)  # type: ignore[arg-type]
    except httpx.TransportError as error:
        outcome.append(error)
