"""What /v1/compare costs over asking each mode yourself, on a running lcrag server.

For each question: (1) the modes one by one, each a streamed /v1/chat/completions request (what a client
would do without compare), (2) one /v1/compare request with all modes (concurrent), and (3) /v1/compare
with a single mode next to the same single chat request (pure overhead: same work, one extra hop).
Everything is warmed up once first, so prefix-cache hits are the same for both paths; medians over the
questions and repeats (the order alternates between repeats), greedy decoding so both paths generate
the same tokens.

    python -m bench.compare_overhead --base-url http://127.0.0.1:8000 --repeats 3
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial
from statistics import median

import httpx

from bench.common import server_parser
from bench.corpus import town_files
from lcrag.client import call, chat_events, connect, replace_collection

COLLECTION = "bench-compare"
QUESTIONS = ["What is Brisk known for?", "When does Dunmere hold its festival?", "What is in Corvale?"]
MODES = ("rag", "lc")


def timed(call: Callable[[], object]) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def chat(http: httpx.Client, mode: str, question: str, max_tokens: int) -> None:
    body = {
        "model": f"{COLLECTION}@{mode}",
        "messages": [{"role": "user", "content": question}],
        "max_tokens": max_tokens,
        "temperature": 0,
    }
    for _ in chat_events(http, body):
        pass


def compare(http: httpx.Client, modes: tuple[str, ...], question: str, max_tokens: int) -> None:
    body = {"question": question, "collection": COLLECTION, "modes": list(modes), "max_tokens": max_tokens}
    failed = [r["mode"] for r in call(http, "POST", "/v1/compare", json=body)["results"] if r["error"]]
    assert not failed, f"modes failed: {failed}"


def main() -> None:
    parser = server_parser(__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=16)
    args = parser.parse_args()

    http = connect(args.base_url, args.api_key)
    replace_collection(http, COLLECTION, town_files())
    info = call(http, "GET", f"/v1/collections/{COLLECTION}")

    one_by_one, together, single_chat, single_compare = [], [], [], []
    for question in QUESTIONS:  # warm-up: embedder, prefix cache
        for mode in MODES:
            chat(http, mode, question, args.max_tokens)
        compare(http, MODES, question, args.max_tokens)
    for repeat in range(args.repeats):
        for q in QUESTIONS:
            runs = [
                (
                    one_by_one,
                    lambda q=q: sum(timed(partial(chat, http, m, q, args.max_tokens)) for m in MODES),
                ),
                (together, partial(timed, partial(compare, http, MODES, q, args.max_tokens))),
                (single_chat, partial(timed, partial(chat, http, "lc", q, args.max_tokens))),
                (single_compare, partial(timed, partial(compare, http, ("lc",), q, args.max_tokens))),
            ]
            for samples, run in runs if repeat % 2 == 0 else reversed(runs):  # alternate to cancel drift
                samples.append(run())
    http.delete(f"/v1/collections/{COLLECTION}")

    print(f"collection: {info['documents']} documents, {info['tokens']} tokens; modes {', '.join(MODES)}; "
          f"{args.max_tokens} answer tokens; {len(one_by_one)} runs each")  # fmt: skip
    print("| path | median s | vs one by one |\n|---|---|---|")
    base = median(one_by_one)
    print(f"| rag then lc, one chat request each | {base:.3f} | 1.00x |")
    both = median(together)
    print(f"| one /v1/compare with both (concurrent) | {both:.3f} | {both / base:.2f}x |")
    print("\n| single mode (lc) | median s | ratio |\n|---|---|---|")
    print(f"| chat request | {median(single_chat):.3f} | 1.00x |")
    ratio = median(single_compare) / median(single_chat)
    print(f"| /v1/compare, one mode | {median(single_compare):.3f} | {ratio:.3f}x |")


if __name__ == "__main__":
    main()
