"""How often `auto` answers with LC, on a small collection and questions that are or are not answered in it.

The collection is six short town descriptions (`bench.corpus.TOWNS`, ~500 tokens). Five questions are
answered there, three have nothing to do with it, two are about the towns but not answered there (the
case the Self-Route marker is for). Each is asked as `<collection>@auto`, greedy; the table shows the
route, the reason and the answer.

    python -m bench.auto_routing --base-url http://127.0.0.1:8000
"""

from __future__ import annotations

from bench.common import server_parser
from bench.corpus import town_files
from lcrag.client import call, connect, replace_collection

COLLECTION = "bench-auto"
QUESTIONS: list[tuple[str, str, str | None]] = [  # (kind, question, expected word in a right answer)
    ("answerable", "What is Corvale known for?", "cider"),
    ("answerable", "When does Dunmere hold its great festival?", "autumn"),
    ("answerable", "What do visitors to Elsby remember?", "clock"),
    ("answerable", "Which town has a lighthouse painted green?", "Arlen"),
    ("answerable", "What is Fenwick known for?", "rye"),
    ("unrelated", "What is the capital of Japan?", None),
    ("unrelated", "How do vaccines train the immune system?", None),
    ("unrelated", "Who wrote the play Hamlet?", None),
    ("about the towns, not answered", "How many people live in Brisk?", None),
    ("about the towns, not answered", "Who is the mayor of Arlen?", None),
]


def main() -> None:
    parser = server_parser(__doc__)
    parser.add_argument("--max-tokens", type=int, default=32)
    args = parser.parse_args()

    http = connect(args.base_url, args.api_key)
    replace_collection(http, COLLECTION, town_files())

    print("| kind | question | route | reason | answer | right |\n|---|---|---|---|---|---|")
    routes = []
    for kind, question, expected in QUESTIONS:
        body = {
            "model": f"{COLLECTION}@auto",
            "messages": [{"role": "user", "content": question}],
            "max_tokens": args.max_tokens,
            "temperature": 0,
        }
        payload = call(http, "POST", "/v1/chat/completions", json=body)
        answer = " ".join((payload["choices"][0]["message"]["content"] or "").split())
        meta = payload["lcrag"]
        routes.append(meta["route"])
        right = "" if expected is None else ("yes" if expected.lower() in answer.lower() else "no")
        print(f"| {kind} | {question} | {meta['route']} | {meta['reason']} | {answer[:80]} | {right} |")
    http.delete(f"/v1/collections/{COLLECTION}")
    print(f"\nauto chose lc for {routes.count('lc')} of {len(routes)} questions")


if __name__ == "__main__":
    main()
