"""KV eviction settings in one shape, from the HTTP request to the engine's step.

- `KVSpec`: what a user asks for (the `lcrag.kv` field, a `policy-ratio` string in a model name or a config).
  It validates its policy and options once, when it is made, and keeps the policy object it built.
- `CacheKey`: what makes two compressed contexts interchangeable (adapter, policy with options, ratio, exact
  context tokens); the engine's cache table, its listing and the server's look-ups all use it.
- `KVTask`: what one engine request does with its K/V (evict its prompt, build or adopt a context cache, or
  be a reconstruction pass), carried as one JSON value in `SamplingParams.extra_args[TASK_KEY]` across the
  process boundary and read back with `KVTask.from_extra_args`.

Spec strings have one spelling, `<policy>-<ratio>` (`snapkv-0.75`), with any options in brackets
(`kvzip[chunk=8,layers=shared]-0.875`); the older `<policy>:<ratio>`, which adapter cards, configs and eval
answer files on disk may hold, is still read. An eval or benchmark configuration (`parse_config`) is `none`,
a spec (eviction of each request's prompt) or `cache:` and a spec (a context compressed once, as a shared
cache).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from compression.policies import Policy
from compression.registry import PolicyError, create

TASK_KEY = "lcrag_kv_task"  # SamplingParams.extra_args key of a request's KVTask (a JSON string)
STATS_KEY = "lcrag_kv"  # where the engine reports a compressed request's stats in `kv_transfer_params`
RETENTION_KEY = "lcrag_kv_retention"  # ... and what its compaction kept (`compression.retention`)

OptionValue = str | int | float | bool
NO_EVICTION = "none"  # the configuration that evicts nothing
CACHED = "cache:"  # a configuration's prefix for a shared context cache
# `<policy>[<name>=<value>,...]-<ratio>`, or `:` before the ratio (the older spelling)
_SPEC = re.compile(r"(?P<policy>[^\[\]]+?)(?:\[(?P<options>[^\[\]]*)\])?[-:](?P<ratio>[0-9.eE+-]+)")


class KVSpec(BaseModel):
    """Per-request KV-cache eviction: `ratio` is the fraction of prompt tokens whose K/V is evicted."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    policy: str = Field(
        default="none", min_length=1, description="Eviction policy name (GET /v1/kv/policies)."
    )
    ratio: float = Field(default=0.0, ge=0.0, lt=1.0, description="Fraction of prompt K/V to evict.")
    window: int | None = Field(default=None, ge=1, description="Observation / recent window in tokens.")
    sinks: int | None = Field(default=None, ge=0, description="Leading tokens always kept.")
    options: dict[str, OptionValue] | None = Field(
        default=None, description="Any other option of the policy (GET /v1/kv/policies lists them)."
    )
    cache: bool | None = Field(
        default=None,
        description="lc mode with a query-agnostic policy compresses the collection once, as a shared cache "
        "later questions reuse; false compresses each request's prompt instead.",
    )
    retention: bool | None = Field(
        default=None,
        description="lc mode: report which spans of each document the eviction kept, and warn when a "
        "passage retrieval ranks high was evicted (`lcrag.kv.retention`).",
    )

    @model_validator(mode="after")
    def _ratio_is_a_number(self) -> KVSpec:
        if math.isnan(self.ratio):
            raise ValueError("ratio must be a number in [0, 1)")
        return self

    @classmethod
    def parse(cls, text: str) -> KVSpec:
        """`snapkv-0.75` (or the older `snapkv:0.75`) -> policy snapkv evicting 75 % of the K/V; options in
        brackets, `kvzip[chunk=8,layers=shared]-0.875`. Raises ValueError (a PolicyError for an unknown
        policy or option) saying what is wrong."""
        found = _SPEC.fullmatch(text)
        try:
            if found is None:
                raise ValueError(text)
            options = _options(found["options"] or "")
            spec = cls(policy=found["policy"], ratio=float(found["ratio"]), options=options or None)
        except ValueError:
            raise ValueError(
                f"bad KV spec {text!r}: write '<policy>-<ratio>' with a ratio in [0, 1), e.g. 'snapkv-0.75', "
                "and any options in brackets, e.g. 'kvzip[chunk=8,layers=shared]-0.875'"
            ) from None
        spec.check()
        return spec

    def __str__(self) -> str:
        """The one spelling, which `parse` reads back: `snapkv-0.75`, `kvzip[chunk=8]-0.875`."""
        return f"{self.policy_text}-{_number_text(self.ratio)}"

    @property
    def policy_text(self) -> str:
        """The policy with the options asked for, sorted, as spec strings spell it: `kvzip[chunk=8]`."""
        options = sorted(self.all_options().items())
        listed = ",".join(f"{name}={_option_text(value)}" for name, value in options)
        return f"{self.policy}[{listed}]" if listed else self.policy

    def check(self) -> KVSpec:
        """Self, once its policy and options are known to exist; raises PolicyError naming what exists."""
        _ = self.policy_object
        return self

    @property
    def evicts(self) -> bool:
        return self.policy != "none" and self.ratio > 0.0

    def all_options(self) -> dict[str, OptionValue]:
        """The policy options asked for (`window`, `sinks` and `options` together)."""
        named = {"window": self.window, "sinks": self.sinks}
        return {**(self.options or {}), **{key: value for key, value in named.items() if value is not None}}

    @cached_property
    def policy_object(self) -> Policy:
        """The policy with its options, built once; raises PolicyError naming what exists."""
        return create(self.policy, **self.all_options())

    @property
    def policy_key(self) -> str:
        """The policy with every option, defaults included, as one string (part of a cache's key)."""
        policy = self.policy_object
        return json.dumps({"policy": policy.name, **dataclasses.asdict(policy)}, sort_keys=True)

    @property
    def shares_context(self) -> bool:
        """LC requests compress their collection's context once, as a shared cache, when the policy is
        query-agnostic, unless the client asked for per-request eviction (`cache: false`)."""
        return self.cache is not False and self.policy_object.query_agnostic

    def task(self, context: int | None = None, label: str | None = None) -> KVTask:
        """The engine task evicting from a request's prompt, or from its first `context` tokens as a shared
        cache labelled `label` (a collection's name)."""
        return KVTask(self, context=context, label=label)

    def scoring_pass(self, context: int, span: tuple[int, int]) -> KVTask:
        """The engine task of a reconstruction pass over `span` of a `context`-token context."""
        return KVTask(self, context=context, span=span)


def _options(listed: str) -> dict[str, OptionValue]:
    """`chunk=8,layers=shared` -> {"chunk": 8, "layers": "shared"}: numbers become numbers, true and false
    booleans (the policy validates each option)."""
    options: dict[str, OptionValue] = {}
    for pair in filter(None, (pair.strip() for pair in listed.split(","))):
        name, equals, text = pair.partition("=")
        if not (name.strip() and equals and text.strip()):
            raise ValueError(f"option {pair!r} is not <name>=<value>")
        options[name.strip()] = _option_value(text.strip())
    return options


def _option_value(text: str) -> OptionValue:
    if text in ("true", "false"):
        return text == "true"
    for number in (int, float):
        try:
            return number(text)
        except ValueError:
            continue
    return text


def _number_text(value: float) -> str:
    """`0.75`, `0`, `1e-05`: short, and exact (two different numbers never share a spelling)."""
    short = f"{value:g}"
    return short if float(short) == value else repr(value)


def _option_text(value: OptionValue) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return _number_text(value) if isinstance(value, float) else str(value)


def parse_config(text: str) -> tuple[KVSpec | None, bool]:
    """An eval or benchmark configuration as (spec, cached): `none` -> (None, False); `snapkv-0.5` ->
    (snapkv evicting half of each request's prompt, False); `cache:kvzip-0.875` -> (kvzip, True): the
    context compressed once, query-agnostically, as a shared cache (options in brackets:
    `cache:kvzip[chunk=8,layers=shared]-0.875`). The older colon spelling (`snapkv:0.5`,
    `cache:kvzip:0.875`) is read too. Raises ValueError (PolicyError) saying what is wrong."""
    if text == NO_EVICTION:
        return None, False
    cached = text.startswith(CACHED)
    spec = KVSpec.parse(text.removeprefix(CACHED))
    if cached and not spec.policy_object.query_agnostic:
        raise ValueError(
            f"config {text!r}: KV policy {spec.policy!r} scores with the question's attention; a shared "
            f"cache ('{CACHED}') needs a query-agnostic policy, or write {str(spec)!r} to evict per request"
        )
    return spec, cached


def config_text(spec: KVSpec | None, cached: bool = False) -> str:
    """A configuration's one spelling: `none`, `snapkv-0.5`, `cache:kvzip[chunk=8]-0.875`."""
    if spec is None:
        return NO_EVICTION
    return f"{CACHED if cached else ''}{spec}"


def normal_config(text: str) -> str:
    """`text` (`parse_config`'s, in either spelling) in the one spelling; an old-spelled config and its
    new spelling name the same configuration, so results and caches keyed by it are shared."""
    return config_text(*parse_config(text))


def context_digest(token_ids: Sequence[int]) -> str:
    """A digest of a context's exact token ids (part of a context cache's key)."""
    return hashlib.sha256(json.dumps(list(token_ids)).encode()).hexdigest()[:32]


@dataclass(frozen=True)
class CacheKey:
    """What makes two contexts' compressed K/V interchangeable."""

    lora: int  # the LoRA adapter's id, 0 for the base model
    policy: str  # `KVSpec.policy_key`: the policy with its options
    ratio: float
    context_tokens: int
    digest: str  # `context_digest` of the context's token ids

    @classmethod
    def of(cls, spec: KVSpec, context_ids: Sequence[int], lora: int = 0) -> CacheKey:
        return cls(lora, spec.policy_key, spec.ratio, len(context_ids), context_digest(context_ids))

    @classmethod
    def of_listing(cls, entry: dict[str, Any]) -> CacheKey:
        """The key of one cache as the engine lists it (`ContextCache.describe`)."""
        return cls(entry["lora"], entry["policy"], entry["ratio"], entry["tokens_before"], entry["digest"])

    def scores_key(self) -> list[int | str]:
        """[lora, policy, digest]: which reconstruction scores fit this cache (the ratio does not matter)."""
        return [self.lora, self.policy, self.digest]


@dataclass(frozen=True)
class KVTask:
    """What one engine request does with its K/V:
    - evict: `context` None, the prompt's K/V is compacted when its prefill completes;
    - context cache: the first `context` prompt tokens (a collection's instructions and documents) are
      compressed once and kept as a shared cache that later requests with the same first tokens adopt;
    - reconstruction pass (`span` set): the prompt is [context][a repeat of `span` of it]; the runner keeps
      the attention scores it yields for a later cache build (KVzip)."""

    spec: KVSpec
    context: int | None = None
    label: str | None = None
    span: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        if self.context is not None and (isinstance(self.context, bool) or self.context < 1):
            raise ValueError(f"a KV task's context must be a positive token count; got {self.context!r}.")
        if self.span is not None:
            start, end = self.span
            if self.context is None or not 0 <= start < end <= self.context:
                inside = f"the {self.context}-token context"
                raise ValueError(f"reconstruction pass span [{start}, {end}) is not inside {inside}")
        elif self.context is not None and not self.spec.policy_object.query_agnostic:
            raise ValueError(
                f"KV policy {self.spec.policy!r} scores with the question's attention; a shared context "
                "cache needs a query-agnostic policy."
            )

    @property
    def is_pass(self) -> bool:
        return self.span is not None

    @property
    def policy(self) -> Policy:
        return self.spec.policy_object

    def compressed_length(self, prompt_tokens: int) -> int:
        """Tokens whose K/V is compressed: the shared context, or the whole prompt."""
        return min(self.context, prompt_tokens) if self.context is not None else prompt_tokens

    def extra_args(self) -> dict[str, Any]:
        """The `SamplingParams.extra_args` (or request `vllm_xargs`) entry that asks the engine for this."""
        value: dict[str, Any] = {
            "policy": self.spec.policy,
            "ratio": self.spec.ratio,
            "options": self.spec.all_options(),
        }
        value |= {"context": self.context, "label": self.label, "span": self.span}
        return {TASK_KEY: json.dumps({k: v for k, v in value.items() if v not in (None, {})}, sort_keys=True)}

    @classmethod
    def from_extra_args(cls, extra_args: dict[str, Any] | None) -> KVTask | None:
        """The task a request carries, or None when it has none or evicts nothing (policy `none` or ratio 0
        outside a reconstruction pass). Raises ValueError (PolicyError) saying what is malformed."""
        if not extra_args or TASK_KEY not in extra_args:
            return None
        try:
            value = json.loads(extra_args[TASK_KEY])
            spec = KVSpec(policy=value["policy"], ratio=value.get("ratio", 0.0), options=value.get("options"))
            span = value.get("span")
            task = cls(
                spec.check(),
                value.get("context"),
                value.get("label"),
                (int(span[0]), int(span[1])) if span is not None else None,
            )
        except PolicyError:
            raise
        except (ValueError, TypeError, KeyError, IndexError) as error:
            raise ValueError(f"malformed {TASK_KEY}: {error}") from None
        return task if task.is_pass or spec.evicts else None
