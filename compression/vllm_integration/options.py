"""A request's eviction settings as they travel to the engine: flat keys in `SamplingParams.extra_args`
(the OpenAI server fills it from the request body's `vllm_xargs`), read the same way by the scheduler and
the model runner.

Three kinds of request carry them:
- per-request eviction: the prompt's K/V is compacted when its prefill completes;
- a context cache request (`lcrag_kv_cache_context = N`): only the first N prompt tokens (a collection's
  instructions and documents) are compressed, once, and kept as a shared cache that later requests with
  the same first N tokens adopt;
- a reconstruction pass (`lcrag_kv_pass`): a plain request whose prompt is [context][repeat of a span of it];
  the runner keeps the attention scores it yields for a later cache build (KVzip).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from compression.policies import Policy
from compression.registry import create

POLICY_KEY = "lcrag_kv_policy"
RATIO_KEY = "lcrag_kv_ratio"
OPTIONS_KEY = "lcrag_kv_options"  # a JSON object string: vllm_xargs values are flat
CONTEXT_KEY = "lcrag_kv_cache_context"  # int: the first N prompt tokens form a shareable context
LABEL_KEY = "lcrag_kv_cache_label"  # str: what the context is (a collection's name), for listing and dropping
PASS_KEY = "lcrag_kv_pass"  # JSON {"context": N, "start": s, "end": e}: a reconstruction pass of span [s, e)
STATS_KEY = "lcrag_kv"  # where the engine reports a compressed request's stats in `kv_transfer_params`
RETENTION_KEY = "lcrag_kv_retention"  # ... and what its compaction kept (`compression.retention`)


@dataclass(frozen=True)
class EvictionRequest:
    """What one request asked for: a policy, the fraction of K/V to evict and, for a context cache, how many
    leading prompt tokens are the shared context."""

    policy: Policy
    ratio: float
    context: int | None = None
    label: str | None = None

    def compressed_length(self, prompt_tokens: int) -> int:
        """Tokens whose K/V is compressed: the shared context, or the whole prompt."""
        return self.context if self.context is not None else prompt_tokens


@dataclass(frozen=True)
class PassRequest:
    """A reconstruction pass: its prompt is the `context` tokens, then a repeat of `span` of them."""

    policy: Policy
    context: int
    span: tuple[int, int]


def policy_spec(policy: Policy) -> str:
    """The policy with its options as one string (part of a context cache's key)."""
    return json.dumps({"policy": policy.name, **dataclasses.asdict(policy)}, sort_keys=True)


def context_digest(token_ids: Sequence[int]) -> str:
    """A digest of a context's exact token ids (part of a context cache's key)."""
    return hashlib.sha256(json.dumps(list(token_ids)).encode()).hexdigest()[:32]


def to_extra_args(
    policy: str,
    ratio: float,
    options: dict[str, Any] | None = None,
    context: int | None = None,
    label: str | None = None,
) -> dict[str, Any]:
    """The `vllm_xargs` / `extra_args` entries that ask the engine for eviction (of the first `context`
    prompt tokens as a shared cache, when given)."""
    args: dict[str, Any] = {POLICY_KEY: policy, RATIO_KEY: float(ratio)}
    given = {key: value for key, value in (options or {}).items() if value is not None}
    if given:
        args[OPTIONS_KEY] = json.dumps(given, sort_keys=True)
    if context is not None:
        args[CONTEXT_KEY] = int(context)
        if label:
            args[LABEL_KEY] = label
    return args


def pass_extra_args(
    policy: str, options: dict[str, Any] | None, context: int, span: tuple[int, int]
) -> dict[str, Any]:
    """The `extra_args` of a reconstruction pass over `span` of a `context`-token context."""
    args = to_extra_args(policy, 0.0, options)
    del args[RATIO_KEY]
    args[PASS_KEY] = json.dumps({"context": context, "start": span[0], "end": span[1]})
    return args


def _policy_of(extra_args: dict[str, Any]) -> Policy:
    options = json.loads(extra_args.get(OPTIONS_KEY) or "{}")
    return create(str(extra_args[POLICY_KEY]), **options)


def from_extra_args(extra_args: dict[str, Any] | None) -> EvictionRequest | None:
    """The eviction a request asked for, or None when it evicts nothing (no keys, policy `none`, ratio 0, or
    a reconstruction pass). Raises ValueError (PolicyError) for a bad policy, option, ratio or context."""
    if not extra_args or POLICY_KEY not in extra_args or PASS_KEY in extra_args:
        return None
    ratio = float(extra_args.get(RATIO_KEY, 0.0))
    if not (0.0 <= ratio < 1.0) or math.isnan(ratio):
        raise ValueError(f"KV eviction ratio must be in [0, 1); got {ratio}.")
    policy = _policy_of(extra_args)
    if policy.name == "none" or ratio == 0.0:
        return None
    context = extra_args.get(CONTEXT_KEY)
    if context is not None:
        if not isinstance(context, int) or isinstance(context, bool) or context < 1:
            raise ValueError(f"{CONTEXT_KEY} must be a positive token count; got {context!r}.")
        if not policy.query_agnostic:
            raise ValueError(
                f"KV policy {policy.name!r} scores with the question's attention; a shared context cache "
                "needs a query-agnostic policy."
            )
    label = extra_args.get(LABEL_KEY)
    return EvictionRequest(policy, ratio, context, str(label) if label else None)


def pass_from_extra_args(extra_args: dict[str, Any] | None) -> PassRequest | None:
    """The reconstruction pass a request is, or None. Raises ValueError for a malformed one."""
    if not extra_args or PASS_KEY not in extra_args:
        return None
    spec = json.loads(extra_args[PASS_KEY])
    context, start, end = int(spec["context"]), int(spec["start"]), int(spec["end"])
    if not 0 <= start < end <= context:
        raise ValueError(
            f"reconstruction pass span [{start}, {end}) is not inside the {context}-token context"
        )
    return PassRequest(_policy_of(extra_args), context, (start, end))
