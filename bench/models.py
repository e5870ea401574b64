"""Tiny random models with the bundled model's tokenizer, built in seconds from a config: what the
benchmarks that need another model's shape serve (`bench.tp_speed`), and the test servers' model."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja")
HEAD_DIM = 64
# the test servers' tiny Llama: two layers, the bundled model's vocabulary and special tokens
TINY_LLAMA: dict[str, Any] = dict(
    vocab_size=49152,
    hidden_size=128,
    intermediate_size=256,
    num_hidden_layers=2,
    num_attention_heads=2,
    num_key_value_heads=1,
    head_dim=HEAD_DIM,
    max_position_embeddings=2048,
    bos_token_id=1,
    eos_token_id=2,
    pad_token_id=2,
    tie_word_embeddings=True,
)


def save_tiny_llama(out: Path, tokenizer_source: Path, **config: object) -> Path:
    """A random Llama (`TINY_LLAMA`, 2 layers, with `config` over it) with the tokenizer and chat template
    of the model in `tokenizer_source`: loads in seconds."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(**{**TINY_LLAMA, **config})).save_pretrained(out)
    copy_tokenizer(tokenizer_source, out)
    return out


def copy_tokenizer(source: Path, out: Path) -> None:
    """The bundled model's tokenizer and chat template, so a tiny model reads the same prompts."""
    for name in TOKENIZER_FILES:
        shutil.copy(source / name, out / name)
