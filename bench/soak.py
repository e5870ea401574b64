"""Soak: a bounded mix of every kind of request against one `lcrag serve` for a few minutes, then what leaked.

The benchmark starts the server itself (the bundled model unless `--serve-args` says otherwise), builds a
small collection, and runs `--clients` client threads for `--minutes`. Each client walks the mix in its
own seeded order: rag, lc, lc with per-request eviction (snapkv), lc over a compressed collection cache
(kvzip), auto, compare, a stream the client drops after its first events, and an upload followed by the
document's delete. Reported:
- requests by status and kind, and p50/p95 latency per kind (client-side, whole request);
- KV-cache blocks in use (the engine's block pool: total minus free) idle before and after, the
  compressed caches dropped first: they must be equal (0 leaked blocks);
- the server's resident memory (API and engine processes together) after a warm-up round of every kind
  and at the end: growth must stay below 5 %.
Targets: 0 5xx, 0 leaked blocks, RSS growth < 5 %.

    python -m bench.soak --out out/bench                       # ~6 min on 2 cores
    python -m bench.soak --minutes 1 --clients 2               # quick
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from bench.common import doc_parser
from bench.corpus import corpus
from lcrag import local_server
from lcrag.client import call, connect, delete_collection, replace_collection
from lcrag.default_model import model_folder

COLLECTION = "soak"
SCRATCH = "soak-uploads"
QUESTION = "What did the harbour master record?"
KINDS = ("rag", "lc", "lc-snapkv", "lc-cache-kvzip", "auto", "compare", "stream-dropped", "upload-delete")


def chat(model: str, tokens: int, stream: bool = False) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": QUESTION}], "max_tokens": tokens,
            "stream": stream}  # fmt: skip


def request_kinds(http: httpx.Client, tokens: int) -> dict[str, Callable[[int], int]]:
    """Each kind as a function of a counter that sends one request and returns its status."""

    def post_chat(model: str) -> Callable[[int], int]:
        return lambda _n: http.post("/v1/chat/completions", json=chat(model, tokens)).status_code

    def compare(_n: int) -> int:
        body = {"question": QUESTION, "collection": COLLECTION, "modes": ["rag", "lc"], "max_tokens": tokens}
        return http.post("/v1/compare", json=body).status_code

    def stream_dropped(_n: int) -> int:
        with http.stream("POST", "/v1/chat/completions", json=chat(f"{COLLECTION}@lc", 64, True)) as r:
            for _line in zip(range(3), r.iter_lines(), strict=False):
                pass  # the client reads three lines and hangs up mid-stream
            return r.status_code

    def upload_delete(n: int) -> int:
        files = [
            (
                "files",
                (f"note-{n}.txt", f"Soak note {n}: the tide was {n % 7} metres.".encode(), "text/plain"),
            )
        ]
        uploaded = http.post(f"/v1/collections/{SCRATCH}/documents", files=files)
        if uploaded.status_code != 200:
            return uploaded.status_code
        doc_id = uploaded.json()["files"][0]["doc_id"]
        return http.delete(f"/v1/collections/{SCRATCH}/documents/{doc_id}").status_code

    return {
        "rag": post_chat(f"{COLLECTION}@rag"),
        "lc": post_chat(f"{COLLECTION}@lc"),
        "lc-snapkv": post_chat(f"{COLLECTION}@lc:snapkv-0.75"),
        "lc-cache-kvzip": post_chat(f"{COLLECTION}@lc:kvzip-0.75"),
        "auto": post_chat(f"{COLLECTION}@auto"),
        "compare": compare,
        "stream-dropped": stream_dropped,
        "upload-delete": upload_delete,
    }


def blocks_in_use(http: httpx.Client) -> int:
    """The engine's KV blocks not in its free queue, as its block pool counts them (`GET /v1/kv/caches`;
    blocks vLLM's prefix cache keeps for reuse are free: evictable at any time)."""
    pool = http.get("/v1/kv/caches").raise_for_status().json()
    return pool["total_blocks"] - pool["free_blocks"]


def idle_blocks(http: httpx.Client) -> int:
    """Blocks in use once nothing runs and the compressed caches are dropped."""
    http.delete(f"/v1/collections/{COLLECTION}/kv-cache")
    time.sleep(2.0)  # a dropped stream's abort reaches the engine on its next step
    return blocks_in_use(http)


def server_rss_mib(pid: int) -> float:
    import psutil

    process = psutil.Process(pid)
    return sum(p.memory_info().rss for p in [process, *process.children(recursive=True)]) / 2**20


class Tally:
    """Statuses and latencies by kind, shared by the client threads."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.statuses: dict[str, Counter[str]] = defaultdict(Counter)
        self.seconds: dict[str, list[float]] = defaultdict(list)

    def record(self, kind: str, status: str, seconds: float) -> None:
        with self.lock:
            self.statuses[kind][status] += 1
            self.seconds[kind].append(seconds)


def run_one(kind: str, send: Callable[[int], int], n: int, tally: Tally) -> None:
    started = time.perf_counter()
    try:
        status = str(send(n))
    except httpx.HTTPError as error:
        status = type(error).__name__
    tally.record(kind, status, time.perf_counter() - started)


def client_loop(kinds: dict[str, Callable[[int], int]], seed: int, deadline: float, tally: Tally) -> None:
    order = list(KINDS)
    random.Random(seed).shuffle(order)
    n = seed * 1_000_000
    while time.monotonic() < deadline:
        for kind in order:
            if time.monotonic() >= deadline:
                return
            n += 1
            run_one(kind, kinds[kind], n, tally)


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def soak(args: argparse.Namespace, base_url: str, pid: int) -> dict[str, Any]:
    with connect(base_url) as http:
        replace_collection(http, COLLECTION, corpus(args.documents, 12))
        delete_collection(http, SCRATCH, missing_ok=True)
        call(http, "POST", "/v1/collections", json={"name": SCRATCH})
        blocks_before = idle_blocks(http)
        kinds = request_kinds(http, args.max_tokens)
        warm = Tally()
        for kind in KINDS:  # warm-up: every kind once, so lazily loaded parts are in memory
            run_one(kind, kinds[kind], 0, warm)
        rss_warm = server_rss_mib(pid)
        tally = Tally()
        deadline = time.monotonic() + args.minutes * 60
        threads = [
            threading.Thread(
                target=client_loop, args=(request_kinds(http, args.max_tokens), seed, deadline, tally)
            )
            for seed in range(1, args.clients + 1)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        rss_end = server_rss_mib(pid)
        blocks_after = idle_blocks(http)
    per_kind = {
        kind: {"requests": sum(tally.statuses[kind].values()), "statuses": dict(tally.statuses[kind]),
               "p50_s": round(statistics.median(tally.seconds[kind]), 2),
               "p95_s": round(percentile(tally.seconds[kind], 0.95), 2)}
        for kind in KINDS if tally.seconds[kind]
    }  # fmt: skip
    server_errors = sum(
        count for kind in KINDS for status, count in tally.statuses[kind].items() if status.startswith("5")
    )
    return {
        "minutes": args.minutes, "clients": args.clients, "max_tokens": args.max_tokens,
        "warm_up_statuses": {kind: dict(counts) for kind, counts in warm.statuses.items()},
        "kinds": per_kind, "server_errors": server_errors,
        "blocks_before": blocks_before, "blocks_after": blocks_after,
        "leaked_blocks": blocks_after - blocks_before,
        "rss_mib_after_warm_up": round(rss_warm, 1), "rss_mib_end": round(rss_end, 1),
        "rss_growth_percent": round(100.0 * (rss_end - rss_warm) / rss_warm, 2),
    }  # fmt: skip


def markdown(result: dict[str, Any], command: str) -> str:
    lines = [
        f"Command: `{command}` ({result['clients']} clients, {result['minutes']} min, "
        f"{result['max_tokens']} answer tokens).",
        "",
        "| kind | requests | statuses | p50 s | p95 s |",
        "|---|---:|---|---:|---:|",
    ]
    for kind, row in result["kinds"].items():
        statuses = ", ".join(f"{status}: {count}" for status, count in sorted(row["statuses"].items()))
        lines.append(f"| {kind} | {row['requests']} | {statuses} | {row['p50_s']} | {row['p95_s']} |")
    lines += [
        "",
        f"- 5xx answers: **{result['server_errors']}** (target 0)",
        f"- KV blocks in use when idle: {result['blocks_before']} before, {result['blocks_after']} after: "
        f"**{result['leaked_blocks']} leaked** (target 0)",
        f"- server RSS (API + engine): {result['rss_mib_after_warm_up']} MiB after warm-up, "
        f"{result['rss_mib_end']} MiB at the end: **{result['rss_growth_percent']:+.2f} %** (target < 5 %)",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    import sys

    parser = doc_parser(__doc__)
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--clients", type=int, default=3, help="Client threads sending at once.")
    parser.add_argument("--max-tokens", type=int, default=12, help="Answer tokens per generation request.")
    parser.add_argument("--documents", type=int, default=6, help="Documents in the soak collection.")
    parser.add_argument("--serve-args", nargs=argparse.REMAINDER, default=["--max-model-len", "4096"],
                        help="Flags for `lcrag serve` (last on the command line).")  # fmt: skip
    parser.add_argument("--out", type=Path, default=None, help="Folder for soak.json and soak.md.")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="lcrag-soak-") as data_dir:
        log = Path(data_dir) / "server.log"
        model = model_folder()  # prepared once, outside the throwaway data dir
        serve = ["--data-dir", data_dir, "--model", str(model), *args.serve_args]
        process, base_url = local_server.start(serve, log)
        try:
            result = soak(args, base_url, process.pid)
        finally:
            local_server.stop(process)
        result["server_log_tracebacks"] = log.read_text().count("Traceback")
    command = "python -m bench.soak " + " ".join(sys.argv[1:])
    report = markdown(result, command)
    print(report)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "soak.json").write_text(json.dumps(result, indent=2))
        (args.out / "soak.md").write_text(report)


if __name__ == "__main__":
    main()
