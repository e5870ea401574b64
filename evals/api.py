"""What the HTTP-API suites share: streaming one chat answer with its costs, making a collection anew that LC
mode shows whole, the server the suite asks (`--base-url` or one it starts), and the answers each suite
caches on disk (a rerun only fills gaps). Talks to the server through `lcrag.client`."""

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

from lcrag.client import ApiFailure, call, chat_events, connect, delta_text, replace_collection

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
    """Stream one answer (a refusal becomes a Reply with `error`, so a suite records it and goes on; a server
    that does not answer stops the suite)."""
    started = time.perf_counter()
    text, meta, first = "", {}, None
    try:
        for chunk in chat_events(http, body):
            meta.update(chunk.get("lcrag") or {})
            delta = delta_text(chunk)
            if delta:
                first = first or time.perf_counter()
                text += delta
    except ApiFailure as failure:
        if failure.status is None:
            raise
        return Reply("", {}, None, (time.perf_counter() - started) * 1000, failure.message)
    ttft = None if first is None else (first - started) * 1000
    return Reply(text, meta, ttft, (time.perf_counter() - started) * 1000)


def upload_whole(http: httpx.Client, name: str, files: Sequence[tuple[str, str]]) -> None:
    """The collection `name` made anew from (file name, text) pairs, uploaded in that order; raises if LC
    mode would not show a document's text whole."""
    stored = replace_collection(http, name, files)
    for (file_name, text), entry in zip(files, stored, strict=True):
        shown = call(http, "GET", f"/v1/collections/{name}/documents/{entry['doc_id']}")["text"]
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


def token_counter(model: Path | None) -> Callable[[str], int]:
    """Counts a text's tokens in the tokenizer of `model` (`--model`; None: the bundled model's), without
    special tokens."""
    from transformers import AutoTokenizer

    from lcrag.default_model import model_folder

    tokenizer = AutoTokenizer.from_pretrained(model_folder(model))
    return lambda text: len(tokenizer.encode(text, add_special_tokens=False))


@contextmanager
def suite_client(
    args: argparse.Namespace, suite: str, data_dir: Path | None = None
) -> Iterator[httpx.Client]:
    """A client of `--base-url`, or of a server started on the suite's model for the block (its log in
    `--out`/<suite>.server.log, its data in `data_dir`, by default a fresh temporary folder)."""
    from lcrag import local_server
    from lcrag.default_model import model_folder

    data_dir = data_dir or Path(tempfile.mkdtemp(prefix="lcrag-eval-"))
    serve_args = ["--model", str(model_folder(args.model)), "--data-dir", str(data_dir)]
    args.out.mkdir(parents=True, exist_ok=True)
    log_path = args.out / f"{suite}.server.log"
    with (
        local_server.serving(args.base_url, serve_args, log_path) as base_url,
        connect(base_url, args.api_key, timeout=900) as http,
    ):
        yield http


def write_report(out: Path, suite: str, summary: Any, table: str, command: str | None = None) -> str:
    """`<suite>.json` (the command and `summary`) and `<suite>.md` (the command and `table`) in `out`;
    returns the command (by default this process's)."""
    command = command or f"python -m evals.{suite} " + " ".join(sys.argv[1:])
    (out / f"{suite}.json").write_text(json.dumps({"command": command, "summary": summary}, indent=1))
    (out / f"{suite}.md").write_text(f"`{command}`\n\n{table}\n")
    return command
