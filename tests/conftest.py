"""Shared fixtures: real things built once per session (a tiny random Llama, running lcrag servers)."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from bench.models import save_tiny_llama
from lcrag import local_server
from lcrag.client import auth_headers
from lcrag.default_model import prepare_default_model
from lcrag.local_server import free_port
from lcrag.settings import Settings
from tests.architectures import PEAKY_LLAMA

REPO_ROOT = Path(__file__).resolve().parents[1]
LCRAG = Path(sys.executable).with_name("lcrag")


@dataclass(frozen=True)
class RunningServer:
    base_url: str
    model: str
    api_key: str | None
    log_path: Path

    def headers(self) -> dict[str, str]:
        return auth_headers(self.api_key)


@pytest.fixture(scope="session")
def default_model_path() -> Path:
    """The real bundled model, prepared once in the user's data dir (`make setup` normally did it)."""
    return prepare_default_model(Settings().models_dir)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory, default_model_path: Path) -> Path:
    """The tiny model the test servers run."""
    return save_tiny_llama(tmp_path_factory.mktemp("tiny-llama"), default_model_path)


@pytest.fixture(scope="session")
def peaky_model_dir(tmp_path_factory: pytest.TempPathFactory, default_model_path: Path) -> Path:
    """A tiny model for eviction tests: 2 KV heads (per-head keep sets differ) and large random weights, so
    attention is peaked and greedy tokens depend on which K/V is kept (the default init repeats one token)."""
    return save_tiny_llama(tmp_path_factory.mktemp("peaky-llama"), default_model_path, **PEAKY_LLAMA)


def start_server(
    log_dir: Path,
    args: list[str],
    model: str,
    api_key: str | None = None,
    env: dict[str, str] | None = None,
    ui: bool = False,
) -> tuple[subprocess.Popen[bytes], RunningServer]:
    """`lcrag serve` with `args`, without the web UI unless `ui` (tests of the UI ask for it)."""
    log_path = log_dir / f"lcrag-serve-{len(list(log_dir.glob('lcrag-serve-*.log')))}.log"
    command = [*args, "--api-key", api_key] if api_key else list(args)
    process, base_url = local_server.start(command, log_path, env, ui=ui)
    return process, RunningServer(base_url, model, api_key, log_path)


stop_server = local_server.stop


def wait_until(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    """Poll `condition` until it holds; fail naming `what` after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout_s:.0f} s waiting for {what}"
        time.sleep(0.05)


def requests_running(base_url: str) -> int:
    """Requests the server's engine is running now (vLLM's `vllm:num_requests_running` gauge)."""
    metrics = httpx.get(f"{base_url}/metrics", timeout=30).text
    values = [
        line.rsplit(" ", 1)[1]
        for line in metrics.splitlines()
        if line.startswith("vllm:num_requests_running")
    ]
    return int(sum(float(value) for value in values))


@pytest.fixture(scope="session")
def tiny_server(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Iterator[RunningServer]:
    """`lcrag serve` on the tiny model: API key, 512-token context, 64-token answer budget, 1 MB upload
    files, 3 MB request bodies."""
    data_dir = tmp_path_factory.mktemp("tiny-data")
    process, server = start_server(
        data_dir,
        [
            "--model",
            str(tiny_model_dir),
            "--max-model-len",
            "512",
            "--kv-cache-gb",
            "1",
            "--data-dir",
            str(data_dir),
        ],
        model=tiny_model_dir.name,
        api_key="test-key",
        env={"LCRAG_MAX_UPLOAD_MB": "1", "LCRAG_MAX_REQUEST_MB": "3", "LCRAG_ANSWER_TOKENS": "64"},
        ui=True,  # tests/integration/test_ui*.py
    )
    yield server
    stop_server(process)


@pytest.fixture(scope="session")
def real_server(
    tmp_path_factory: pytest.TempPathFactory, default_model_path: Path
) -> Iterator[RunningServer]:
    """`lcrag serve` with the bundled SmolLM2-135M-Instruct, as `make serve` starts it."""
    log_dir = tmp_path_factory.mktemp("real-server")
    process, server = start_server(
        log_dir, ["--max-model-len", "2048", "--kv-cache-gb", "1"], model=default_model_path.name, ui=True
    )
    yield server
    stop_server(process)


@pytest.fixture(scope="session")
def tokenizer(default_model_path: Path):
    """The served default model's tokenizer (chunks are sized in its tokens)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(default_model_path)


@pytest.fixture(scope="session")
def embedder():
    """The real offline MiniLM embedder, loaded once."""
    from rag.embeddings import Embedder

    loaded = Embedder()
    loaded.embed(["warm up"])
    return loaded


@pytest.fixture(scope="session")
def chroma_server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real `chroma run` server on a free loopback port (the scale-out store)."""
    path = tmp_path_factory.mktemp("chroma-server")
    port = free_port()
    log = (path / "chroma.log").open("wb")
    process = subprocess.Popen(
        [
            str(LCRAG.with_name("chroma")),
            "run",
            "--path",
            str(path / "db"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/api/v2/heartbeat", timeout=2).status_code == 200:
                break
        except httpx.TransportError:
            time.sleep(0.2)
    else:
        stop_server(process)  # type: ignore[arg-type]
        raise RuntimeError(f"chroma run did not start:\n{(path / 'chroma.log').read_text()[-2000:]}")
    yield url
    stop_server(process)  # type: ignore[arg-type]
