"""The reference for eviction inside vLLM, in plain HF transformers: prefill the whole prompt, score each
layer's cached K/V with a policy (and let it combine the layers' scores), prune the cache to the kept
tokens (per layer and KV head), then decode greedily with *logical* position ids (RoPE positions continue
from the prompt length, as if nothing was evicted). vLLM with the same policy must produce the same tokens.
For context caches the same is done to the context alone, then the suffix is prefilled after it.

Queries for scoring are captured during the prefill where the model's own code applies RoPE to them, so
the model code is used as it is.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch

from compression.budget import uniform_budgets
from compression.policies import LayerView, Policy, keep_indices
from compression.policies.base import ReconstructionPolicy, Rotary
from compression.policies.reconstruction import ReconstructionView
from compression.reconstruction import ReconstructionPass

HFCausalLM = (
    Any  # a transformers causal LM of the Llama family (its `config`, `model.rotary_emb`, modeling module)
)


@dataclass(frozen=True)
class ReferenceOutput:
    tokens: list[int]
    logprobs: list[float]  # of each chosen token
    kept: list[torch.Tensor]  # per layer: [kv_heads, kept] prompt positions


@torch.no_grad()
def generate_with_eviction(
    model: HFCausalLM,
    prompt_ids: list[int],
    policy: Policy,
    ratio: float,
    max_new_tokens: int,
    budgets: list[int] | None = None,
    forced: Sequence[int] | None = None,
) -> ReferenceOutput:
    """Greedy decoding after prefill-time eviction of `ratio` of the prompt's K/V by `policy` (or down to
    `budgets` tokens per layer); with `forced`, decoding follows those tokens instead (teacher forcing) and
    gives their logprobs."""
    n = len(prompt_ids)
    budgets = budgets or uniform_budgets(n, ratio, model.config.num_hidden_layers)
    cache, queries, logits = _prefill(model, prompt_ids)
    kept = _prune(cache, _own_scores(model, cache, queries, policy, n), policy, budgets, n)
    tokens, logprobs = _decode(model, cache, logits, n, max_new_tokens, forced)
    return ReferenceOutput(tokens, logprobs, kept)


@torch.no_grad()
def generate_with_context_cache(
    model: HFCausalLM,
    context_ids: list[int],
    suffix_ids: list[int],
    policy: Policy,
    keep: int,
    max_new_tokens: int,
    passes: Sequence[ReconstructionPass] = (),
) -> ReferenceOutput:
    """Greedy decoding of `suffix_ids` after a context compressed on its own, as a context cache: prefill
    the context, score it (with the reconstruction `passes`' repeats for policies that need them), prune it
    to `keep` tokens per layer and KV head, then prefill the suffix and decode at logical positions after
    the whole context."""
    n = len(context_ids)
    cache, queries, _ = _prefill(model, context_ids)
    if passes:
        assert isinstance(policy, ReconstructionPolicy), (
            f"{policy.name} is not scored by reconstruction passes"
        )
        own = _reconstruction_scores(model, policy, passes, n)
    else:
        own = _own_scores(model, cache, queries, policy, n)
    kept = _prune(cache, own, policy, [keep] * model.config.num_hidden_layers, n)
    positions = torch.arange(n, n + len(suffix_ids)).unsqueeze(0)
    logits = model(
        input_ids=torch.tensor([suffix_ids]), past_key_values=cache, position_ids=positions, use_cache=True
    ).logits[0, -1]
    tokens, logprobs = _decode(model, cache, logits, n + len(suffix_ids), max_new_tokens)
    return ReferenceOutput(tokens, logprobs, kept)


def _prefill(model: HFCausalLM, ids: list[int]) -> tuple[Any, dict[int, torch.Tensor], torch.Tensor]:
    """The whole prompt at once: its cache, every layer's queries and the last position's logits."""
    from transformers import DynamicCache

    with _queries_captured(model) as queries:
        cache = DynamicCache()
        logits = model(
            input_ids=torch.tensor([ids]), past_key_values=cache, use_cache=True, logits_to_keep=1
        ).logits[0, -1]  # the last position's only: all of them would take len(ids) x vocab floats
    return cache, queries, logits


def _own_scores(
    model: HFCausalLM, cache: Any, queries: dict[int, torch.Tensor], policy: Policy, n: int
) -> list[torch.Tensor]:
    window = policy.queries_needed()
    rotary = hf_rotary(model)
    own = []
    for layer in range(len(cache.layers)):
        cached = cache.layers[layer]
        layer_queries = queries[layer][0]
        layer_queries = layer_queries if window is None else layer_queries[:, n - min(window, n) :, :]
        view = LayerView(cached.keys[0, :, :n], cached.values[0, :, :n], layer_queries, rotary)
        own.append(policy.score(view))
    return own


def hf_rotary(model: HFCausalLM) -> Rotary:
    """The HF model's RoPE as a `Rotary` (its `rotary_emb` gives cos and sin with both halves repeated)."""
    config = model.config
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads

    def cos_sin(positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        probe = torch.zeros(1, dtype=torch.float32)
        cos, sin = model.model.rotary_emb(probe, positions.unsqueeze(0))
        return cos[0, :, : head_dim // 2].float(), sin[0, :, : head_dim // 2].float()

    return Rotary(cos_sin, head_dim, config.max_position_embeddings)


def _reconstruction_scores(
    model: HFCausalLM, policy: ReconstructionPolicy, passes: Sequence[ReconstructionPass], n: int
) -> list[torch.Tensor]:
    """Per layer [kv_heads, n]: the most any pass's repeat attends to each context token (zero elsewhere)."""
    totals: list[torch.Tensor] = []
    for reconstruction in passes:
        cache, queries, _ = _prefill(model, reconstruction.prompt)
        for layer in range(len(cache.layers)):
            keys = cache.layers[layer].keys[0]
            if len(totals) <= layer:
                totals.append(torch.zeros(keys.shape[0], n))
            view = ReconstructionView(keys, queries[layer][0][:, n:], reconstruction.span, n)
            start, end = reconstruction.span
            totals[layer][:, start:end] = torch.maximum(totals[layer][:, start:end], policy.pass_scores(view))
    return totals


def _prune(
    cache: Any, own: list[torch.Tensor], policy: Policy, budgets: list[int], n: int
) -> list[torch.Tensor]:
    """Keep `budgets[layer]` of the first `n` cached tokens per layer and KV head, as the policy decides."""
    kept = []
    must_keep = policy.must_keep(n)
    for layer, (budget, scores) in enumerate(zip(budgets, policy.across_layers(own), strict=True)):
        cached = cache.layers[layer]
        keep = keep_indices(scores, budget, must_keep)
        index = keep.unsqueeze(0).unsqueeze(-1).expand(1, -1, -1, cached.keys.shape[-1])
        cached.keys = cached.keys.gather(2, index)
        cached.values = cached.values.gather(2, index)
        kept.append(keep)
    return kept


def _decode(
    model: HFCausalLM,
    cache: Any,
    logits: torch.Tensor,
    position: int,
    max_new_tokens: int,
    forced: Sequence[int] | None = None,
) -> tuple[list[int], list[float]]:
    """Greedy tokens (or the `forced` ones) and their logprobs from `logits`, the next token at logical
    `position`."""
    tokens, logprobs = [], []
    for step in range(max_new_tokens):
        token = int(logits.argmax()) if forced is None else forced[step]
        tokens.append(token)
        logprobs.append(float(logits.log_softmax(-1)[token]))
        if step + 1 == max_new_tokens:
            break
        logits = model(
            input_ids=torch.tensor([[token]]),
            past_key_values=cache,
            position_ids=torch.tensor([[position + step]]),
            use_cache=True,
        ).logits[0, -1]
    return tokens, logprobs


@contextmanager
def _queries_captured(model: HFCausalLM) -> Iterator[dict[int, torch.Tensor]]:
    """Each attention layer's queries after RoPE, {layer: [1, q_heads, n, head_dim]}, recorded where the
    model's own code rotates them: its modeling module's `apply_rotary_pos_emb`, which every attention layer
    calls once per forward, in layer order (Llama, Qwen2/3 — after the q norm —, Mistral, Phi-3 alike)."""
    modeling: Any = sys.modules[type(model).__module__]
    rotate = modeling.apply_rotary_pos_emb
    captured: dict[int, torch.Tensor] = {}

    def recording(query: torch.Tensor, key: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        rotated_query, rotated_key = rotate(query, key, *args, **kwargs)
        captured[len(captured)] = rotated_query
        return rotated_query, rotated_key

    modeling.apply_rotary_pos_emb = recording
    try:
        yield captured
    finally:
        modeling.apply_rotary_pos_emb = rotate
