"""Retrieval latency in embedded Chroma at 10K and 100K chunks: the HNSW query alone, and end to end
(embedding the question with the real MiniLM plus the query), p50 and p95 over the same questions.

Index vectors are random unit vectors (search cost does not depend on what they mean; embedding 100K
real chunks would take over an hour here); questions are real sentences embedded by the real model.

    python -m bench.retrieval --sizes 10000 100000 --queries 200
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.common import doc_parser
from bench.corpus import document
from rag.chunking import Chunk
from rag.embeddings import Embedder
from rag.loaders import LoadedDocument
from rag.store import Store

DIMENSION = 384
CHUNKS_PER_DOCUMENT = 100


def fill(store: Store, name: str, size: int, seed: int) -> None:
    """`size` chunks in documents of CHUNKS_PER_DOCUMENT, written through `Store.add_document`."""
    store.create_collection(name)
    rng = np.random.default_rng(seed)
    for first in range(0, size, CHUNKS_PER_DOCUMENT):
        count = min(CHUNKS_PER_DOCUMENT, size - first)
        vectors = rng.standard_normal((count, DIMENSION)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        doc = LoadedDocument(f"doc-{first}.txt", f"doc {first}", "", f"{first:016x}{seed:048x}")
        chunks = [Chunk(i, f"chunk {first + i}", i * 100, i * 100 + 99, None, 64) for i in range(count)]
        store.add_document(name, doc, chunks, vectors.tolist(), doc_tokens=64 * count)


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


def main() -> None:
    parser = doc_parser(__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--top-k", type=int, default=5)
    args = parser.parse_args()

    embedder = Embedder()
    questions = [document(seed, 1) for seed in range(args.queries)]
    embedder.embed(questions[:4])
    print("| chunks | build s | query p50 ms | query p95 ms | embed+query p50 ms | embed+query p95 ms |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        store = Store.open(path=str(Path(tmp) / "chroma"))
        for size in args.sizes:
            name = f"bench-{size}"
            started = time.perf_counter()
            fill(store, name, size, seed=size)
            build = time.perf_counter() - started
            assert store.count_chunks(name) == size and len(store.documents(name)) == -(
                -size // CHUNKS_PER_DOCUMENT
            )
            query_ms, total_ms = [], []
            for question in questions:
                t0 = time.perf_counter()
                vector = embedder.embed([question])[0]
                t1 = time.perf_counter()
                hits = store.query(name, vector, args.top_k)
                t2 = time.perf_counter()
                query_ms.append((t2 - t1) * 1000)
                total_ms.append((t2 - t0) * 1000)
                assert len(hits) == args.top_k
            cells = [statistics.median(query_ms), percentile(query_ms, 95)]
            cells += [statistics.median(total_ms), percentile(total_ms, 95)]
            print(f"| {size:,} | {build:.0f} | " + " | ".join(f"{cell:.1f}" for cell in cells) + " |")


if __name__ == "__main__":
    main()
