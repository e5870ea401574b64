"""Ingest throughput on this machine: lcrag's ingest (batched embedding per document, one Chroma write
per document) against a naive loop (embed and add one chunk at a time); both chunk the same documents
the same way (256 model tokens), same run.

    python -m bench.ingest --documents 40 --sentences 60
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from transformers import AutoTokenizer

from bench.common import doc_parser
from bench.corpus import corpus
from lcrag.default_model import model_folder
from rag.chunking import chunk_document
from rag.embeddings import Embedder
from rag.ingest import Ingestor
from rag.loaders import load_bytes
from rag.store import Store


def naive(embedder: Embedder, store: Store, tokenizer: object, documents: list) -> float:
    """The same chunks, embedded and added one at a time."""
    store.create_collection("naive")
    collection = store.client.get_collection("naive")
    started = time.perf_counter()
    for document in documents:
        for chunk in chunk_document(document, tokenizer):
            vector = embedder.model.encode([chunk.text], normalize_embeddings=True).tolist()
            collection.add(ids=[f"{document.name}:{chunk.index}"], embeddings=vector, documents=[chunk.text])
    return time.perf_counter() - started


def encoder_gflops(embedder: Embedder, word_pieces: float) -> float:
    """Multiply-adds x 2 of one encoder pass over `word_pieces` tokens: the layers' linear maps plus the
    attention scores and weighted sums (embeddings, norms and pooling are negligible)."""
    config = embedder.model[0].auto_model.config
    hidden, inner, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    linear = 2 * word_pieces * (4 * hidden * hidden + 2 * hidden * inner)
    attention = 2 * 2 * word_pieces * word_pieces * hidden
    return layers * (linear + attention) / 1e9


def matmul_gflops(size: int = 2048, repeats: int = 5) -> float:
    """This machine's float32 matrix-multiply rate with torch's threads: the embedder's ceiling."""
    import torch

    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    started = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * size**3 * repeats / (time.perf_counter() - started) / 1e9


def ours(ingestor: Ingestor, documents: list) -> float:
    ingestor.store.create_collection("ours")
    started = time.perf_counter()
    for document in documents:
        ingestor.add("ours", document)
    return time.perf_counter() - started


def main() -> None:
    parser = doc_parser(__doc__)
    parser.add_argument("--documents", type=int, default=40)
    parser.add_argument("--sentences", type=int, default=60)
    args = parser.parse_args()

    tokenizer = AutoTokenizer.from_pretrained(model_folder())
    embedder = Embedder()
    embedder.embed(["warm up"] * 8)
    documents = [load_bytes(name, text.encode()) for name, text in corpus(args.documents, args.sentences)]
    chunks = [c.text for d in documents for c in chunk_document(d, tokenizer)]
    with tempfile.TemporaryDirectory() as tmp:
        store = Store.open(path=str(Path(tmp) / "chroma"))
        ingestor = Ingestor(store, embedder, tokenizer)
        t_naive = naive(embedder, store, tokenizer, documents)
        t_ours = ours(ingestor, documents)
        assert store.count_chunks("ours") == len(chunks)
    print(
        f"documents: {len(documents)}  chunks: {len(chunks)} (256 model tokens, overlap 32), MiniLM-L6 on CPU"
    )
    print("| ingest | seconds | chunks/s | vs naive |\n|---|---|---|---|")
    for name, seconds in (("naive loop (one chunk at a time)", t_naive), ("lcrag Ingestor", t_ours)):
        print(f"| {name} | {seconds:.1f} | {len(chunks) / seconds:.1f} | {t_naive / seconds:.2f}x |")
    started = time.perf_counter()
    for document in documents:
        chunk_document(document, tokenizer)
    chunking_ms = (time.perf_counter() - started) / len(chunks) * 1000
    pieces = float(embedder.model.tokenize(chunks)["attention_mask"].sum()) / len(chunks)  # as truncated
    gflops, peak = encoder_gflops(embedder, pieces), matmul_gflops()
    print(
        f"\nchunking (warm cache): {chunking_ms:.1f} ms per chunk\n"
        f"embedder: {pieces:.0f} word pieces per chunk = {gflops:.2f} GFLOP; float32 matmul here: "
        f"{peak:.0f} GFLOP/s -> at most {peak / gflops:.1f} chunks/s if embedding ran at matmul peak"
    )


if __name__ == "__main__":
    main()
