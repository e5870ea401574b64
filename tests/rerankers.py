"""A tiny random cross-encoder (none ships offline): a 2-layer BERT sequence classifier with one output,
MiniLM's tokenizer, loadable by sentence-transformers' `CrossEncoder`; built in a second."""

from __future__ import annotations

import shutil
from pathlib import Path

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")


def save_tiny_cross_encoder(out: Path) -> Path:
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    from rag.embeddings import default_embedder_path

    source = default_embedder_path()
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=30522,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        num_labels=1,
        initializer_range=0.5,  # large weights: the scores lie far apart, no near-ties
    )
    BertForSequenceClassification(config).save_pretrained(out)
    for name in TOKENIZER_FILES:
        shutil.copy(source / name, out / name)
    return out
