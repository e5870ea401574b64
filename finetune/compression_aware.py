"""Compression-aware training: the answer is learned from the K/V that eviction would keep.

When lcrag serves a request with KV eviction, the prompt is prefilled with full attention, then each layer
keeps, per KV head, the prompt tokens its policy scores best, and every later token attends only to those
plus the generated tokens. Training reproduces that in one forward pass: an attention function (registered
with transformers' `AttentionInterface`) scores each layer's prompt keys and queries with the same policy
and budget, and masks the evicted prompt positions for the completion's queries (rows at and after the
prompt's end); prompt rows keep full causal attention, as in the prefill. The row of the prompt's last
token (it predicts the first answer token) is full too: vLLM samples that token before compaction.

The keep sets come from the model being trained (adapter included), detached from the gradient, and are
recomputed identically when gradient checkpointing replays a layer. `compression.reference` (prune a
DynamicCache, decode with logical positions) is the independent check used by the tests.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from compression.policies import LayerView, Policy, keep_indices
from compression.policies.base import kept_count
from compression.registry import PolicyError
from compression.spec import KVSpec

ATTENTION_NAME = "lcrag_simulated_eviction"
IGNORED_LABEL = -100


def parse_compression(text: str) -> KVSpec:
    """`--compression policy-ratio` (e.g. `snapkv-0.75`, the fraction of prompt K/V evicted; the older
    `snapkv:0.75` is read too) as a KVSpec; a ValueError saying what to write."""
    try:
        spec = KVSpec.parse(text)
    except PolicyError as error:
        raise ValueError(f"--compression {text!r}: {error}") from None
    except ValueError:
        spec = KVSpec()
    if not spec.evicts:
        raise ValueError(
            f"--compression {text!r}: write POLICY-RATIO with a ratio in (0, 1), e.g. snapkv-0.75."
        )
    return spec


@dataclass
class SimulatedEviction:
    """Per-model state: the policy and ratio, the prompt length of each row of the current batch, and the
    last keep sets per layer ([rows][kv_heads, kept] prompt positions, for inspection)."""

    policy: Policy
    ratio: float
    prompt_lengths: list[int] = field(default_factory=list)
    kept: dict[int, list[torch.Tensor]] = field(default_factory=dict)

    def row_mask(
        self, layer: int, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor
    ) -> torch.Tensor:
        """[batch, kv_heads, q, k] True where a query may attend: causal, minus evicted prompt K/V for
        the completion's queries."""
        batch, kv_heads, length = key.shape[0], key.shape[1], key.shape[2]
        causal = torch.ones(length, length, dtype=torch.bool, device=key.device).tril()
        allowed = causal.expand(batch, kv_heads, length, length).clone()
        kept_rows = []
        for row, prompt_length in enumerate(self.prompt_lengths):
            if not 0 < prompt_length < length:
                continue
            window = self.policy.queries_needed()
            first_query = 0 if window is None else max(0, prompt_length - window)
            view = LayerView(
                key[row, :, :prompt_length].detach(),
                value[row, :, :prompt_length].detach(),
                query[row, :, first_query:prompt_length].detach(),
            )
            must_keep = self.policy.must_keep(prompt_length)
            kept = max(kept_count(prompt_length, self.ratio), int(must_keep.sum()))
            keep = keep_indices(self.policy.score(view), kept, must_keep)
            evicted = torch.ones(kv_heads, prompt_length, dtype=torch.bool, device=key.device)
            evicted.scatter_(1, keep.to(key.device), False)
            allowed[row, :, prompt_length:, :prompt_length] &= ~evicted.unsqueeze(1)
            kept_rows.append(keep)
        self.kept[layer] = kept_rows
        return allowed


def simulated_eviction_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """SDPA attention whose mask also hides, from the completion's queries, the prompt K/V eviction drops."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    state: SimulatedEviction = module.lcrag_eviction
    allowed = state.row_mask(module.layer_idx, query, key, value)
    if attention_mask is not None:  # padding, as a boolean [batch, 1, q, k] mask
        allowed &= attention_mask.to(torch.bool)
    group = query.shape[1] // key.shape[1]
    kwargs.pop("is_causal", None)
    return sdpa_attention_forward(
        module, query, key, value, allowed.repeat_interleave(group, dim=1), is_causal=False, **kwargs
    )


def enable(model: torch.nn.Module, spec: KVSpec) -> SimulatedEviction:
    """Switch `model` (a HF causal LM, possibly wrapped by PEFT) to simulated eviction; returns its state.

    Before each forward, the prompt length of every row is read from the `labels` argument (the first
    position whose label is not ignored), as TRL's completion-only collator builds them; a forward without
    labels (or with `prompt_lengths` set by hand) uses `state.prompt_lengths` as they are.
    """
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

    AttentionInterface.register(ATTENTION_NAME, simulated_eviction_attention)
    ALL_MASK_ATTENTION_FUNCTIONS.register(ATTENTION_NAME, sdpa_mask)
    state = SimulatedEviction(spec.policy_object, spec.ratio)
    causal_lm = _causal_lm(model)
    for layer in causal_lm.model.layers:
        layer.self_attn.lcrag_eviction = state
    causal_lm.set_attn_implementation(ATTENTION_NAME)

    def read_prompt_lengths(_module: torch.nn.Module, _args: tuple, kwargs: dict[str, Any]) -> None:
        labels = kwargs.get("labels")
        if labels is not None:
            state.prompt_lengths = [prompt_length(row) for row in labels]

    causal_lm.register_forward_pre_hook(read_prompt_lengths, with_kwargs=True)
    return state


def prompt_length(labels: torch.Tensor) -> int:
    """Tokens before the first trained (not ignored) label: the prompt; all of them when none is trained."""
    trained = (labels != IGNORED_LABEL).nonzero()
    return int(trained[0]) if len(trained) else len(labels)


def _causal_lm(model: torch.nn.Module) -> Any:
    """The transformers causal LM inside a PEFT wrapper (or the model itself)."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    if not hasattr(inner, "model") or not hasattr(inner.model, "layers"):
        kind = type(inner).__name__
        raise ValueError(f"Compression-aware training needs a decoder-only model; got {kind}.")
    return inner
