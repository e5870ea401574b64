"""Time to first token of LC and RAG answers on a running lcrag server, first and second question on the
same ~6K-token collection (the second LC question can reuse the first's prompt prefix from vLLM's prefix
cache). Streams each answer and times the first content token as the client sees it.

    python -m bench.lc_vs_rag --base-url http://127.0.0.1:8000 --collection-tokens 6000
"""

from __future__ import annotations

import time

import httpx

from bench.common import server_parser
from bench.corpus import corpus
from lcrag.client import call, chat_events, connect, delta_text, replace_collection

QUESTIONS = ["Who repaired the northern bridge?", "What did the archivist study during the long drought?"]
COLLECTION = "bench-lc-rag"
TOKENS_PER_SENTENCE = 25  # measured for bench.corpus sentences with the default model's tokenizer


def ttft(http: httpx.Client, collection: str, mode: str, question: str) -> tuple[float, int]:
    started = time.perf_counter()
    first, prompt_tokens = None, 0
    body = {
        "model": f"{collection}@{mode}",
        "messages": [{"role": "user", "content": question}],
        "max_tokens": 8,
        "temperature": 0,
        "stream_options": {"include_usage": True},
    }
    for chunk in chat_events(http, body):
        if first is None and delta_text(chunk):
            first = time.perf_counter() - started
        if chunk.get("usage"):
            prompt_tokens = chunk["usage"]["prompt_tokens"]
    assert first is not None, "no content token streamed"
    return first, prompt_tokens


def main() -> None:
    parser = server_parser(__doc__)
    parser.add_argument("--collection-tokens", type=int, default=6000)
    args = parser.parse_args()

    http = connect(args.base_url, args.api_key)
    sentences = 40
    documents = max(1, args.collection_tokens // (sentences * TOKENS_PER_SENTENCE))
    replace_collection(http, COLLECTION, corpus(documents, sentences, seed=7))
    info = call(http, "GET", f"/v1/collections/{COLLECTION}")

    results = {}
    for mode in ("lc", "rag"):
        for i, question in enumerate(QUESTIONS, start=1):
            results[(mode, i)] = ttft(http, COLLECTION, mode, question)
    http.delete(f"/v1/collections/{COLLECTION}")

    print(f"collection: {info['documents']} documents, {info['tokens']} tokens")
    print("| mode | question | prompt tokens | TTFT s | vs first LC |\n|---|---|---|---|---|")
    first_lc = results[("lc", 1)][0]
    for (mode, i), (seconds, tokens) in results.items():
        print(f"| {mode} | {i} | {tokens} | {seconds:.2f} | {seconds / first_lc:.3f}x |")


if __name__ == "__main__":
    main()
