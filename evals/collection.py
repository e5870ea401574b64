"""RAG vs LC vs compressed LC on the user's own collection, through a server's HTTP API: held-out questions
(`evals.collection_questions`: cloze, quote, planted needles; none of them seen by `lcrag finetune`) asked
in every mode, with the same table and equal-memory plot as `evals.lc_vs_rag` (one row per question kind
and mode: substring accuracy with a bootstrap 95 % interval, EM, F1, prompt tokens, KV memory held, TTFT).

The server is `--base-url`, else the one `lcrag serve` runs by default (LCRAG_HOST/LCRAG_PORT) when it
answers, else one started on `--data-dir` (default: lcrag's data dir). Needle questions are asked over a
copy of the collection with the needles planted (`eval-<name>-needles`, deleted afterwards). LC modes are
left out, with a note, when the collection does not fit the model's window.

    lcrag eval collection NAME                      # 10 questions per kind, ~15 min for 6K tokens on 2 cores
    lcrag eval collection NAME --quick              # 3 per kind, rag@5, lc, lc:kvzip-0.75 and auto
    lcrag eval collection NAME --kv snapkv-0.75 kvzip-0.875 --top-k 3 --adapter my-multidoc
"""

from __future__ import annotations

import argparse
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from evals.api import AnswerCache, ask, upload_whole
from evals.collection_questions import KINDS, SourceDocument, cloze_items, planted, quote_items
from evals.datasets import QAItem
from evals.lc_vs_rag import Answer, answer_key, markdown, mode_body, plot, score, summary
from lcrag.client import ApiFailure, call, kv_bytes_per_token, served_model

SUFFIXES = {"cloze": "", "quote": "", "needle": " Answer with the number."}  # cloze: instructions inside
MAX_TOKENS = {"cloze": 16, "quote": 64, "needle": 24}
Progress = Callable[[int, int], None]  # (answers done, answers in all)


@dataclass(frozen=True)
class CollectionEval:
    """What to ask of which collection, and in which modes."""

    collection: str
    questions: int = 10  # per kind
    kinds: Sequence[str] = KINDS
    top_k: Sequence[int] = (2, 5)
    kv: Sequence[str] = ("kvzip-0.75", "kvzip-0.875")  # lc:<policy>-<ratio> modes
    auto: bool = True
    seed: int = 0

    def modes(self, fits_lc: bool) -> list[str]:
        lc = ["lc", *(f"lc:{kv}" for kv in self.kv)] if fits_lc else []
        return [*(f"rag@{k}" for k in self.top_k), *lc, *(["auto"] if self.auto else [])]

    def command(self) -> str:
        """The `lcrag eval collection` command line that runs this evaluation."""
        parts = ["lcrag eval collection", self.collection, "--questions", str(self.questions),
                 "--kinds", *self.kinds, "--top-k", *map(str, self.top_k), "--kv", *self.kv,
                 *([] if self.auto else ["--no-auto"]), "--seed", str(self.seed)]  # fmt: skip
        return " ".join(parts)

    @property
    def needle_collection(self) -> str:
        return f"eval-{self.collection}"[:55].rstrip("-_") + "-needles"


@dataclass
class CollectionReport:
    rows: list[dict[str, Any]]
    answers: list[Answer]
    notes: list[str] = field(default_factory=list)


def fetch_documents(http: httpx.Client, name: str) -> list[SourceDocument]:
    """Every document of the collection with its text and chunks, in upload order."""
    documents = []
    for entry in call(http, "GET", f"/v1/collections/{name}/documents")["data"]:
        body = call(http, "GET", f"/v1/collections/{name}/documents/{entry['doc_id']}")
        chunks = tuple(chunk["text"] for chunk in sorted(body["chunk_list"], key=lambda c: c["index"]))
        documents.append(SourceDocument(body["doc_id"], body["name"], body["title"], body["text"], chunks))
    return documents


def fingerprint(documents: Sequence[SourceDocument]) -> str:
    """Changes when any document does (a cached answer is only reused for the same collection)."""
    return hashlib.sha256(" ".join(sorted(d.doc_id for d in documents)).encode()).hexdigest()[:10]


def cached_id(tag: str, item: QAItem) -> str:
    """A question's id in the answer cache: the collection's fingerprint, the question's id and a digest of
    its text (so a changed question is asked again)."""
    digest = hashlib.sha256(f"{item.question}|{item.answers}".encode()).hexdigest()[:8]
    return f"{tag}:{item.id}:{digest}"


def run(
    http: httpx.Client,
    spec: CollectionEval,
    answers: AnswerCache[Answer],
    model: str | None = None,
    progress: Progress | None = None,
) -> CollectionReport:
    """Ask every held-out question in every mode (answers already in `answers` are not asked again)."""
    served = model or served_model(http)
    info = call(http, "GET", f"/v1/collections/{spec.collection}")
    notes = []
    if not info["fits_lc"]:
        notes.append(
            f"LC modes left out: the collection's {info['lc_prompt_tokens']} LC prompt tokens exceed the "
            f"window's {info['lc_available_tokens']}."
        )
    modes = spec.modes(info["fits_lc"])
    documents = fetch_documents(http, spec.collection)
    tag = fingerprint(documents)
    asked, needle_files = _questions(spec, documents)
    notes += [
        f"Only {len(items)} {kind} questions: the held-out part of the collection has no more usable text."
        for kind, items in asked.items()
        if len(items) < spec.questions
    ]
    wanted = {
        kind: [
            (item, mode, answer_key(kind, cached_id(tag, item), mode, served))
            for item in items
            for mode in modes
        ]
        for kind, items in asked.items()
    }
    counter = _Counter(sum(len(work) for work in wanted.values()), progress)
    with answers.open():
        for kind, work in wanted.items():
            pending = [(item, mode) for item, mode, key in work if key not in answers]
            counter.advance(len(work) - len(pending))
            if not pending:
                continue
            target = spec.needle_collection if kind == "needle" else spec.collection
            if kind == "needle":
                upload_whole(http, target, needle_files)
            try:
                for item, mode in pending:
                    body = mode_body(
                        mode, target, item.question + SUFFIXES[kind], served, MAX_TOKENS[kind], ""
                    )
                    tagged = QAItem(cached_id(tag, item), item.question, item.answers, (), item.gold)
                    answers.add(score(kind, tagged, mode, ask(http, body), served))
                    counter.advance(1)
            finally:
                if kind == "needle":
                    http.delete(f"/v1/collections/{target}")
    chosen = [answers.answers[key] for work in wanted.values() for _, _, key in work if key in answers]
    return CollectionReport(summary(chosen, kv_bytes_per_token(http)), chosen, notes)


def _questions(
    spec: CollectionEval, documents: Sequence[SourceDocument]
) -> tuple[dict[str, list[QAItem]], list[tuple[str, str]]]:
    """The questions of each kind, and the files of the collection's copy with the needles planted."""
    asked: dict[str, list[QAItem]] = {}
    needle_files: list[tuple[str, str]] = []
    for kind in spec.kinds:
        if kind == "cloze":
            asked[kind] = cloze_items(documents, spec.questions, spec.seed)
        elif kind == "quote":
            asked[kind] = quote_items(documents, spec.questions, spec.seed)
        else:
            needle_files, asked[kind], _ = planted(documents, spec.questions, spec.seed)
    return asked, needle_files


@dataclass
class _Counter:
    total: int
    report: Progress | None
    done: int = 0

    def advance(self, count: int) -> None:
        self.done += count
        if self.report:
            self.report(self.done, self.total)


def answer_cache(out: Path, collection: str) -> AnswerCache[Answer]:
    return AnswerCache(out / f"collection-{collection}.answers.jsonl", Answer, lambda answer: answer.key)


def write(out: Path, report: CollectionReport, command: str | None = None) -> str:
    """collection.json, collection.md and collection.png in `out`; returns the Markdown."""
    from evals.api import write_report

    table = markdown(report.rows, first="kind") + "".join(f"\n\n{note}" for note in report.notes)
    write_report(out, "collection", report.rows, table, command)
    plot(report.rows, out / "collection.png")
    return table


def _server_url(args: argparse.Namespace) -> str | None:
    """`--base-url`, else the default `lcrag serve` address when a server answers there."""
    if args.base_url:
        return args.base_url
    from lcrag.settings import load_settings

    url = load_settings().base_url
    try:
        httpx.get(f"{url}/health", timeout=2).raise_for_status()
    except httpx.HTTPError:
        return None
    return url


def main() -> None:
    from evals.api import add_server_options, suite_client
    from evals.common import eval_parser

    parser = eval_parser(__doc__)
    add_server_options(parser)
    parser.add_argument("collection", help="The collection to ask about.")
    parser.add_argument("--questions", type=int, default=10, help="Questions per kind.")
    parser.add_argument("--kinds", nargs="+", choices=KINDS, default=list(KINDS))
    parser.add_argument("--top-k", type=int, nargs="+", default=[2, 5])
    parser.add_argument(
        "--kv", nargs="*", default=["kvzip-0.75", "kvzip-0.875"], help="lc:<policy>-<ratio> modes."
    )
    parser.add_argument("--no-auto", action="store_true", help="Leave the auto mode out.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", type=Path, default=None, help="Where a started server finds the data.")
    parser.add_argument("--quick", action="store_true", help="3 questions per kind; rag@5, lc, one KV mode.")
    args = parser.parse_args()
    if args.quick:
        args.questions, args.top_k, args.kv = min(args.questions, 3), args.top_k[-1:], args.kv[:1]
    spec = CollectionEval(
        args.collection, args.questions, args.kinds, args.top_k, args.kv, not args.no_auto, args.seed
    )

    from tqdm import tqdm

    from evals.collection_questions import TooSmallError
    from lcrag.settings import load_settings

    args.base_url = _server_url(args)
    data_dir = args.data_dir or load_settings().data_dir
    bar = tqdm(desc="answers")

    def show(done: int, total: int) -> None:
        bar.total = total
        bar.n = done
        bar.refresh()

    with suite_client(args, "collection", data_dir=data_dir) as http:
        try:
            report = run(http, spec, answer_cache(args.out, args.collection), args.adapter, show)
        except (TooSmallError, ValueError, ApiFailure) as error:
            raise SystemExit(f"lcrag eval collection: {error}") from None
    bar.close()
    table = write(args.out, report)
    print(table)
    print(f"\nWrote {args.out}/collection.json, .md and .png")


if __name__ == "__main__":
    main()
