"""Start `lcrag serve` as a child process and wait until it answers, for evals and tests that measure what
a client of a real server gets."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import httpx

LCRAG = Path(sys.executable).with_name("lcrag")
START_TIMEOUT_S = 300


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(
    args: Sequence[str], log_path: Path, env: dict[str, str] | None = None, ui: bool = False
) -> tuple[subprocess.Popen[bytes], str]:
    """`lcrag serve --port <free> *args`, its output in `log_path`; (process, base URL) once /health is 200.
    The web UI is left out unless `ui` (building it adds seconds to every start; evals, benchmarks and
    most tests only use the API). Raises RuntimeError with the log's tail if it exits or is not healthy in
    time."""
    port = free_port()
    process = subprocess.Popen(
        [str(LCRAG), "serve", "--port", str(port), *args],
        stdout=log_path.open("wb"),
        stderr=subprocess.STDOUT,
        env={**os.environ, "LCRAG_UI": "true" if ui else "false", **(env or {})},
    )
    base_url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"lcrag serve exited with {process.returncode}:\n{log_path.read_text()[-4000:]}"
            )
        try:
            if httpx.get(f"{base_url}/health", timeout=2).status_code == 200:
                return process, base_url
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    stop(process)
    raise RuntimeError(f"lcrag serve not healthy after {START_TIMEOUT_S}s:\n{log_path.read_text()[-4000:]}")


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@contextmanager
def serving(base_url: str | None, args: Sequence[str], log_path: Path) -> Iterator[str]:
    """`base_url` when given (a running server), else a server started for the block."""
    if base_url is not None:
        yield base_url
        return
    process, started = start(args, log_path)
    try:
        yield started
    finally:
        stop(process)
