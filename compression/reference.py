"""The reference for eviction inside vLLM, in plain HF transformers: prefill the whole prompt, score each
layer's cached K/V with a policy (and let it combine the layers' scores), prune the cache to the kept
tokens (per layer and KV head), then decode greedily with *logical* position ids (RoPE positions continue
from the prompt length, as if nothing was evicted). vLLM with the same policy must produce the same tokens.

Queries for scoring are recomputed from each attention layer's input (q_proj + RoPE), captured by a
forward pre-hook during the prefill, so the model code is used as it is.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from compression.budget import uniform_budgets
from compression.policies import LayerView, Policy, keep_indices


@dataclass(frozen=True)
class ReferenceOutput:
    tokens: list[int]
    logprobs: list[float]  # of each chosen token
    kept: list[torch.Tensor]  # per layer: [kv_heads, kept] prompt positions


@torch.no_grad()
def generate_with_eviction(
    model: torch.nn.Module,
    prompt_ids: list[int],
    policy: Policy,
    ratio: float,
    max_new_tokens: int,
    budgets: list[int] | None = None,
) -> ReferenceOutput:
    """Greedy decoding after prefill-time eviction of `ratio` of the prompt's K/V by `policy`."""
    from transformers import DynamicCache

    layers = model.config.num_hidden_layers
    n = len(prompt_ids)
    budgets = budgets or uniform_budgets(n, ratio, layers)
    queries, hooks = _capture_queries(model)
    try:
        cache = DynamicCache()
        ids = torch.tensor([prompt_ids])
        logits = model(input_ids=ids, past_key_values=cache, use_cache=True).logits[0, -1]
    finally:
        for hook in hooks:
            hook.remove()
    window = policy.queries_needed()
    own = []
    for layer in range(layers):
        cached = cache.layers[layer]
        layer_queries = queries[layer][0]
        layer_queries = layer_queries if window is None else layer_queries[:, max(0, n - window) :, :]
        own.append(policy.score(LayerView(cached.keys[0], cached.values[0], layer_queries)))
    kept = []
    for layer, (budget, scores) in enumerate(zip(budgets, policy.across_layers(own), strict=True)):
        cached = cache.layers[layer]
        keep = keep_indices(scores, budget)
        index = keep.unsqueeze(0).unsqueeze(-1).expand(1, -1, -1, cached.keys.shape[-1])
        cached.keys = cached.keys.gather(2, index)
        cached.values = cached.values.gather(2, index)
        kept.append(keep)
    tokens, logprobs = [], []
    for step in range(max_new_tokens):
        token = int(logits.argmax())
        tokens.append(token)
        logprobs.append(float(logits.log_softmax(-1)[token]))
        if step + 1 == max_new_tokens:
            break
        logits = model(
            input_ids=torch.tensor([[token]]),
            past_key_values=cache,
            position_ids=torch.tensor([[n + step]]),
            use_cache=True,
        ).logits[0, -1]
    return ReferenceOutput(tokens, logprobs, kept)


def _capture_queries(model: torch.nn.Module) -> tuple[dict[int, torch.Tensor], list]:
    """Hooks that record each attention layer's queries after RoPE: {layer: [1, q_heads, n, head_dim]}."""
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    captured: dict[int, torch.Tensor] = {}
    hooks = []
    for layer_index, layer in enumerate(model.model.layers):
        attention = layer.self_attn

        def hook(module, args, kwargs, layer_index=layer_index):
            hidden = kwargs.get("hidden_states", args[0] if args else None)
            cos, sin = kwargs["position_embeddings"]
            shape = (*hidden.shape[:-1], -1, module.head_dim)
            query = module.q_proj(hidden).view(shape).transpose(1, 2)
            captured[layer_index], _ = apply_rotary_pos_emb(query, query, cos, sin)

        hooks.append(attention.register_forward_pre_hook(hook, with_kwargs=True))
    return captured, hooks
