"""Tiny random checkpoints of the architectures people serve for long context, each built from a config in
seconds: what makes each one different from plain Llama is kept (Qwen2's q/k/v biases, Qwen3's q/k norms,
Phi-3's fused projections and LongRoPE, Llama 3.1's llama3 RoPE scaling, Mistral's own model class), the
rest is small. Weights are large (initializer 0.2) and biases and norm weights random, so attention is
peaked and greedy tokens depend on which K/V is kept, and a bias or norm the eviction mishandles shows."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.models import HEAD_DIM, TINY_LLAMA, copy_tokenizer

# large random weights: peaked attention, so greedy tokens depend on which K/V is kept
PEAKY_LLAMA: dict[str, Any] = dict(
    hidden_size=256,
    intermediate_size=512,
    num_attention_heads=4,
    num_key_value_heads=2,
    initializer_range=0.2,
)
COMMON = {**TINY_LLAMA, **PEAKY_LLAMA}  # head_dim 64 = 256 / 4
LONGROPE_ORIGINAL_WINDOW = 128  # Phi-3's short-factor window; the tests' prompts are longer (long factors)


def qwen2() -> Any:
    from transformers import Qwen2Config

    return Qwen2Config(**COMMON, use_sliding_window=False)


def qwen3() -> Any:
    from transformers import Qwen3Config

    return Qwen3Config(**COMMON, use_sliding_window=False)


def mistral(sliding_window: int | None = None) -> Any:
    from transformers import MistralConfig

    return MistralConfig(**COMMON, sliding_window=sliding_window)


def phi3_longrope() -> Any:
    from transformers import Phi3Config

    half = HEAD_DIM // 2
    rope = {
        "rope_type": "longrope",
        "rope_theta": 10000.0,
        "short_factor": [1.0 + 0.05 * i for i in range(half)],
        "long_factor": [1.0 + 0.5 * i for i in range(half)],
    }
    return Phi3Config(
        **COMMON, original_max_position_embeddings=LONGROPE_ORIGINAL_WINDOW, rope_parameters=rope
    )


def llama3_rope() -> Any:
    from transformers import LlamaConfig

    rope = {
        "rope_type": "llama3",
        "rope_theta": 500000.0,
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 256,
    }
    return LlamaConfig(**COMMON, rope_parameters=rope)


ARCHITECTURES: dict[str, Callable[[], Any]] = {
    "qwen2": qwen2,
    "qwen3": qwen3,
    "mistral": mistral,
    "phi3-longrope": phi3_longrope,
    "llama3-rope": llama3_rope,
}


def save_tiny_model(out: Path, config: Any, tokenizer_source: Path) -> Path:
    """A random model of `config` with the bundled model's tokenizer, biases and norm weights randomized."""
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith(".bias"):
                parameter.normal_(0.0, 0.2)
            elif "norm" in name:
                parameter.uniform_(0.5, 1.5)
    model.save_pretrained(out)
    copy_tokenizer(tokenizer_source, out)
    return out
