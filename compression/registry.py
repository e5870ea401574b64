"""Policies by name: the built-in ones plus any registered under the entry-point group `lcrag.kv_policies`
(each entry point names a `Policy` subclass). `create` validates options and says what went wrong."""

from __future__ import annotations

import dataclasses
import inspect
from functools import cache
from importlib.metadata import entry_points
from typing import Any

from compression.policies import BUILT_IN, Policy

ENTRY_POINT_GROUP = "lcrag.kv_policies"


class PolicyError(ValueError):
    """Unknown policy or bad option; the message lists what is allowed."""


@cache
def policies() -> dict[str, type[Policy]]:
    found = {policy.name: policy for policy in BUILT_IN}
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        policy = entry.load()
        if not (inspect.isclass(policy) and issubclass(policy, Policy)):
            raise PolicyError(f"Entry point {entry.name!r} in {ENTRY_POINT_GROUP} is not a Policy subclass.")
        found[policy.name] = policy
    return found


def options_of(policy: type[Policy]) -> dict[str, Any]:
    return {field.name: field.default for field in dataclasses.fields(policy)}


def create(name: str, **options: Any) -> Policy:
    """The policy `name` with `options` (None values mean 'use the default')."""
    known = policies()
    if name not in known:
        raise PolicyError(f"Unknown KV policy {name!r}; available: {', '.join(sorted(known))}.")
    policy = known[name]
    given = {key: value for key, value in options.items() if value is not None}
    unknown = set(given) - set(options_of(policy))
    if unknown:
        allowed = ", ".join(options_of(policy)) or "none"
        raise PolicyError(
            f"KV policy {name!r} has no option {', '.join(sorted(unknown))}; its options: {allowed}."
        )
    try:
        return policy(**given)
    except (TypeError, ValueError) as error:
        raise PolicyError(f"KV policy {name!r}: {error}") from error


def describe() -> list[dict[str, Any]]:
    """Each policy's name, summary, options with defaults and whether it is query-agnostic (one compressed
    context can then serve every later question), for GET /v1/kv/policies."""
    return [
        {
            "name": name,
            "description": " ".join((policy.__doc__ or "").split()),
            "options": options_of(policy),
            "query_agnostic": policy.query_agnostic,  # usable for a collection's shared context cache
        }
        for name, policy in sorted(policies().items())
    ]
