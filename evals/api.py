"""What the HTTP-API suites share: streaming one chat answer with its costs, the served model, the KV pool's
bytes per token, making a collection anew, and the answers each suite caches on disk (a rerun only fills
gaps)."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any, Generic, TypeVar

import httpx

T = TypeVar("T")


@dataclass(frozen=True)
class Reply:
    """One streamed answer as it arrived."""

    text: str
    lcrag: dict[str, Any]  # the response's `lcrag` field
    ttft_ms: float | None
    total_ms: float
    error: str | None = None


def ask(http: httpx.Client, body: dict[str, Any]) -> Reply:
    """Stream one answer (an HTTP error becomes a Reply with `error`, so a suite records it and goes on)."""
    started = time.perf_counter()
    text, meta, first = "", {}, None
    with http.stream("POST", "/v1/chat/completions", json=body) as response:
        if response.status_code != 200:
            response.read()
            message = response.json().get("error", {}).get("message", response.text[:200])
            return Reply("", {}, None, (time.perf_counter() - started) * 1000, str(message))
        for line in response.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            event = json.loads(line[len("data: ") :])
            meta.update(event.get("lcrag") or {})
            for choice in event.get("choices") or []:
                delta = (choice.get("delta") or {}).get("content")
                if delta:
                    first = first or time.perf_counter()
                    text += delta
    ttft = None if first is None else (first - started) * 1000
    return Reply(text, meta, ttft, (time.perf_counter() - started) * 1000)


def served_model(http: httpx.Client) -> str:
    return http.get("/v1/models").json()["data"][0]["id"]


def kv_bytes_per_token(http: httpx.Client) -> float | None:
    """From the server's KV pool (None when it runs without lcrag's KV eviction)."""
    response = http.get("/v1/kv/caches")
    if response.status_code != 200:
        return None
    pool = response.json()
    return pool["block_bytes"] / pool["block_size"]


def replace_collection(http: httpx.Client, name: str, files: Sequence[tuple[str, str]]) -> None:
    """The collection `name` made anew from (file name, text) pairs, uploaded in that order; raises if LC
    mode would not show a document's text whole."""
    http.delete(f"/v1/collections/{name}")
    http.post("/v1/collections", json={"name": name}).raise_for_status()
    uploads = [("files", (file_name, text.encode(), "text/plain")) for file_name, text in files]
    reply = http.post(f"/v1/collections/{name}/documents", files=uploads)
    reply.raise_for_status()
    for (file_name, text), stored in zip(files, reply.json()["files"], strict=True):
        shown = http.get(f"/v1/collections/{name}/documents/{stored['doc_id']}").json()["text"]
        if " ".join(shown.split()) != " ".join(text.split()):  # what LC mode shows: the chunks joined
            raise RuntimeError(
                f"Collection {name}: LC mode shows {len(shown):,} of the {len(text):,} characters of "
                f"{file_name}; its chunks do not rebuild the document, so the eval would measure another "
                "context than it asks for."
            )


class AnswerCache(Generic[T]):
    """A suite's answers, one JSON line each in `path`, keyed by `key(answer)`; appended as they come."""

    def __init__(self, path: Path, kind: Callable[..., T], key: Callable[[T], str]) -> None:
        self.path, self.key = path, key
        self.answers: dict[str, T] = {}
        if path.exists():
            for line in path.read_text().splitlines():
                answer = kind(**json.loads(line))
                self.answers[key(answer)] = answer
        self._sink: IO[str] | None = None

    def __contains__(self, key: str) -> bool:
        return key in self.answers

    def add(self, answer: T) -> None:
        assert self._sink is not None, "add answers inside `with cache.open():`"
        self.answers[self.key(answer)] = answer
        self._sink.write(json.dumps(asdict(answer)) + "\n")  # type: ignore[call-overload]
        self._sink.flush()

    @contextmanager
    def open(self) -> Iterator[AnswerCache[T]]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as sink:
            self._sink = sink
            try:
                yield self
            finally:
                self._sink = None


def add_server_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--base-url", default=None, help="A running lcrag server (default: start one).")
    parser.add_argument("--api-key", default=None)
    parser.add_argument(
        "--adapter", default=None, help="A served LoRA adapter to evaluate (default: the base)."
    )


def model_dir(args: argparse.Namespace) -> Path:
    """`--model`, else the bundled model's folder."""
    from lcrag.default_model import prepare_default_model
    from lcrag.settings import Settings

    return args.model or prepare_default_model(Settings().models_dir)


def token_counter(folder: Path) -> Callable[[str], int]:
    """Counts a text's tokens in the model's tokenizer (no special tokens)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    return lambda text: len(tokenizer.encode(text, add_special_tokens=False))


@contextmanager
def suite_client(
    args: argparse.Namespace, suite: str, data_dir: Path | None = None
) -> Iterator[httpx.Client]:
    """A client of `--base-url`, or of a server started on the suite's model for the block (its log in
    `--out`/<suite>.server.log, its data in `data_dir`, by default a fresh temporary folder)."""
    from lcrag import local_server

    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    data_dir = data_dir or Path(tempfile.mkdtemp(prefix="lcrag-eval-"))
    serve_args = ["--model", str(model_dir(args)), "--data-dir", str(data_dir)]
    args.out.mkdir(parents=True, exist_ok=True)
    log_path = args.out / f"{suite}.server.log"
    with (
        local_server.serving(args.base_url, serve_args, log_path) as base_url,
        httpx.Client(base_url=base_url, headers=headers, timeout=900) as http,
    ):
        yield http


def write_report(out: Path, suite: str, summary: Any, table: str, command: str | None = None) -> str:
    """`<suite>.json` (the command and `summary`) and `<suite>.md` (the command and `table`) in `out`;
    returns the command (by default this process's)."""
    command = command or f"python -m evals.{suite} " + " ".join(sys.argv[1:])
    (out / f"{suite}.json").write_text(json.dumps({"command": command, "summary": summary}, indent=1))
    (out / f"{suite}.md").write_text(f"`{command}`\n\n{table}\n")
    return command
