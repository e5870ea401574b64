"""A request's eviction settings as they travel to the engine: flat keys in `SamplingParams.extra_args`
(the OpenAI server fills it from the request body's `vllm_xargs`), read the same way by the scheduler and
the model runner."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from compression.policies import Policy, kept_count
from compression.registry import create

POLICY_KEY = "lcrag_kv_policy"
RATIO_KEY = "lcrag_kv_ratio"
OPTIONS_KEY = "lcrag_kv_options"  # a JSON object string: vllm_xargs values are flat
STATS_KEY = "lcrag_kv"  # where the engine reports a compressed request's stats in `kv_transfer_params`


@dataclass(frozen=True)
class EvictionRequest:
    """What one request asked for: a policy and the fraction of its prompt's K/V to evict."""

    policy: Policy
    ratio: float

    def kept_prompt_tokens(self, prompt_tokens: int) -> int:
        return kept_count(prompt_tokens, self.ratio)


def to_extra_args(policy: str, ratio: float, options: dict[str, Any] | None = None) -> dict[str, Any]:
    """The `vllm_xargs` / `extra_args` entries that ask the engine for eviction."""
    args: dict[str, Any] = {POLICY_KEY: policy, RATIO_KEY: float(ratio)}
    given = {key: value for key, value in (options or {}).items() if value is not None}
    if given:
        args[OPTIONS_KEY] = json.dumps(given, sort_keys=True)
    return args


def from_extra_args(extra_args: dict[str, Any] | None) -> EvictionRequest | None:
    """The eviction a request asked for, or None when it evicts nothing (no keys, policy `none`, ratio 0).
    Raises ValueError (PolicyError) for a bad policy, option or ratio."""
    if not extra_args or POLICY_KEY not in extra_args:
        return None
    ratio = float(extra_args.get(RATIO_KEY, 0.0))
    if not (0.0 <= ratio < 1.0) or math.isnan(ratio):
        raise ValueError(f"KV eviction ratio must be in [0, 1); got {ratio}.")
    options = json.loads(extra_args.get(OPTIONS_KEY) or "{}")
    policy = create(str(extra_args[POLICY_KEY]), **options)
    if policy.name == "none" or ratio == 0.0:
        return None
    return EvictionRequest(policy, ratio)
