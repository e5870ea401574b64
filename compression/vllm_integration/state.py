"""One request's KV eviction state in the engine (`RequestKV`), kept in one table (`KVTable`, request id ->
state) that the scheduler owns and hands to its KV cache manager (the same dict, not a copy).

Its life: `KVCompactScheduler.add_request` makes it from the request's `KVTask`; the manager and the
scheduler fill in its running part while it is scheduled (offset, the cache it adopts, the fresh blocks
a planned compaction writes into); `_preempt_request` resets that part (`RequestKV.preempted`);
`_free_request`, the one place a request's state ends (finished, aborted or stopped), drops it and
reports its stats. The model runner never sees it: what it needs comes in each step's plan (`plan.py`).

Extends nothing in vLLM; keyed by `vllm.v1.request.Request.request_id`.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from compression.spec import RETENTION_KEY, STATS_KEY, CacheKey, KVTask
from compression.vllm_integration.plan import ScoresKey

if TYPE_CHECKING:
    from vllm.v1.core.kv_cache_utils import KVCacheBlock
    from vllm.v1.request import Request

    from compression.vllm_integration.context_cache import ContextCache


@dataclass
class RequestKV:
    """What one request does with its K/V and how far it got."""

    task: KVTask  # its task, a shared context clipped to its prompt
    length: int  # tokens it compresses (its prompt, or its shared context); a pass: the context it scores
    hit_limit: int  # most prompt tokens a prefix-cache hit may cover (it computes the queries it scores with)
    cache_limit: int | None  # tokens whose blocks may enter the prefix cache (None: no limit, a pass)
    cache_key: CacheKey | None  # the context cache it adopts or builds (context-cache requests)
    scores_key: ScoresKey | None  # the reconstruction scores it adds to (a pass) or reads (its compaction)
    started: float = field(default_factory=time.monotonic)
    # while it runs; reset when it is preempted
    offset: int | None = None  # evicted tokens, once compacted or adopting
    adopting: ContextCache | None = None  # waiting: the cache its prefix-cache lookup found to adopt
    adopted: bool = False  # adopted a cache this step (the scheduler then counts the hit)
    into: list[KVCacheBlock] | None = None  # fresh blocks a planned compaction writes into
    # what it reports when it finishes
    stats: dict[str, Any] | None = None
    retention: str | None = None  # what the compaction kept (or the adopted cache's), `compression.retention`

    @classmethod
    def of(cls, task: KVTask, request: Request) -> RequestKV:
        """The state of a newly added request; raises ValueError for a task the engine cannot run."""
        lora = request.lora_request.lora_int_id if request.lora_request else 0
        prompt = request.prompt_token_ids or []
        if task.is_pass:
            assert task.context is not None
            if not task.policy.needs_reconstruction:
                raise ValueError(f"KV policy {task.spec.policy!r} is not scored by reconstruction passes")
            key = CacheKey.of(task.spec, prompt[: task.context], lora)
            return cls(task, task.context, task.context, None, None, tuple(key.scores_key()))
        if task.context is not None and task.context > request.num_prompt_tokens:
            task = dataclasses.replace(task, context=request.num_prompt_tokens)
        length = task.compressed_length(request.num_prompt_tokens)
        window = task.policy.queries_needed()
        hit_limit = 0 if window is None else max(0, length - max(1, window))
        cache_key = scores_key = None
        if task.context is not None or task.policy.needs_reconstruction:
            key = CacheKey.of(task.spec, prompt[:length], lora)
            cache_key = key if task.context is not None else None
            scores_key = tuple(key.scores_key()) if task.policy.needs_reconstruction else None
        return cls(task, length, hit_limit, length, cache_key, scores_key)

    def preempted(self) -> None:
        """vLLM preempted the request (its blocks are freed): it starts over, adopting or compacting again."""
        self.offset = None
        self.adopting = None
        self.adopted = False
        self.into = None

    def report(self, kv_params: dict[str, Any] | None, totals: dict[str, int]) -> dict[str, Any] | None:
        """The finished request's `kv_transfer_params` with its stats (and retention) added, if it has any."""
        if self.stats is None:
            return kv_params
        params = {**(kv_params or {}), STATS_KEY: {**self.stats, **totals}}
        if self.retention is not None:
            params[RETENTION_KEY] = self.retention
        return params


KVTable = dict[str, RequestKV]  # request id -> its state: every request with a KV task, until it is freed
