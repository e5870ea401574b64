"""Trained adapters appear in a running server without a restart (`lcrag adapters load`), answer as
`model=<name>` (also with a collection: `<name>/<collection>@rag`), and leave again on unload; an adapter
trained on another base model is refused."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from finetune.data.kv_retrieval import KVRetrievalConfig, examples
from finetune.train import CARD_NAME, TrainConfig, train
from lcrag.cli import app
from tests.conftest import RunningServer, start_server, stop_server

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Path:
    from transformers import AutoTokenizer

    data_dir = tmp_path_factory.mktemp("lora-data")
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    data = [item.messages for item in examples(tokenizer, KVRetrievalConfig(target_tokens=150), 2)]
    train(
        data,
        TrainConfig(
            tiny_model_dir, data_dir / "adapters" / "kv", steps=3, recipe="kv_retrieval", learning_rate=3e-2
        ),
    )
    other = data_dir / "adapters" / "other-base"
    other.mkdir()
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        (other / name).write_bytes((data_dir / "adapters" / "kv" / name).read_bytes())
    (other / CARD_NAME).write_text(json.dumps({"base_model": "/models/some-other-model"}))
    return data_dir


@pytest.fixture(scope="module")
def lora_server(data_dir: Path, tiny_model_dir: Path) -> Iterator[RunningServer]:
    args = ["--model", str(tiny_model_dir), "--max-model-len", "512", "--kv-cache-gb", "1", "--enable-lora"]
    process, server = start_server(data_dir, [*args, "--data-dir", str(data_dir)], model=tiny_model_dir.name)
    yield server
    stop_server(process)


def cli(server: RunningServer, data_dir: Path, *arguments: str):
    return CliRunner().invoke(
        app, ["adapters", *arguments, "--url", server.base_url, "--data-dir", str(data_dir)]
    )


def first_logprobs(server: RunningServer, model: str) -> list[float]:
    body = {"model": model, "prompt": "Dictionary [1] {", "max_tokens": 4, "temperature": 0, "logprobs": 1}
    reply = httpx.post(f"{server.base_url}/v1/completions", json=body, timeout=60)
    assert reply.status_code == 200, reply.text
    return reply.json()["choices"][0]["logprobs"]["token_logprobs"]


def models(server: RunningServer) -> set[str]:
    return {m["id"] for m in httpx.get(f"{server.base_url}/v1/models", timeout=30).json()["data"]}


def test_load_chat_combine_and_unload_without_restart(lora_server: RunningServer, data_dir: Path) -> None:
    assert "kv" not in models(lora_server)
    loaded = cli(lora_server, data_dir, "load", "kv")
    assert loaded.exit_code == 0, loaded.output
    assert "kv" in models(lora_server)
    listed = cli(lora_server, data_dir, "list")
    assert "kv\tloaded\trecipe=kv_retrieval steps=3" in listed.output
    base, tuned = first_logprobs(lora_server, lora_server.model), first_logprobs(lora_server, "kv")
    assert max(abs(a - b) for a, b in zip(base, tuned, strict=True)) > 1e-3

    base_url = lora_server.base_url
    httpx.post(f"{base_url}/v1/collections", json={"name": "adocs"}, timeout=30)
    files = {"files": ("note.txt", b"The vault code is 4817. The vault is in the old mill.", "text/plain")}
    httpx.post(f"{base_url}/v1/collections/adocs/documents", files=files, timeout=120).raise_for_status()
    chat = {"model": "kv/adocs@rag", "messages": [{"role": "user", "content": "What is the vault code?"}],
            "max_tokens": 4}  # fmt: skip
    reply = httpx.post(f"{base_url}/v1/chat/completions", json=chat, timeout=60)
    assert reply.status_code == 200, reply.text
    assert reply.json()["model"] == "kv" and reply.json()["lcrag"]["mode"] == "rag"

    unloaded = cli(lora_server, data_dir, "unload", "kv")
    assert unloaded.exit_code == 0, unloaded.output
    assert "kv" not in models(lora_server)


def test_wrong_base_model_and_unknown_adapters_are_refused(
    lora_server: RunningServer, data_dir: Path
) -> None:
    wrong = cli(lora_server, data_dir, "load", "other-base")
    assert wrong.exit_code == 1 and "was trained on /models/some-other-model" in wrong.output
    missing = cli(lora_server, data_dir, "load", "nope")
    assert missing.exit_code == 1 and "No adapter 'nope'" in missing.output and "kv" in missing.output
