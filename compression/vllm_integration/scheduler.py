"""The scheduler half of KV eviction: it decides when a request's K/V is compacted and where to, which
requests adopt a resident context cache, and tells the model runner each step (`StepPlan`); the block
accounting itself is `manager.py`'s.

vLLM 0.32 pieces extended (v1/core/sched/scheduler.py): `Scheduler.__init__` (the KV cache manager is
adopted as `KVCompactKVCacheManager`), `add_request`, `_update_after_schedule` (runs at the end of
`schedule()`, on the very `SchedulerOutput` the worker receives), `update_from_output`, `_free_request`
(its first return value becomes the finished output's `kv_transfer_params`, our channel for per-request
stats and retention). Admission itself is vLLM's: it asks the manager for computed blocks and
allocates, preempting the newest running request when allocation fails.

Per request:
- per-request eviction: when the prompt's K/V is complete, `keep` tokens survive (into fresh blocks when
  its blocks are in the prefix cache, else in place); from then on physical length = logical - offset.
- context cache (`KVTask.context = N`): the first N prompt tokens are a collection's context. If a
  cache with the same key is resident the request adopts it at admission (offset N - kept) and prefills
  only its own tokens; otherwise its step is cut at N, the context is compacted into whole blocks that
  become the cache, and it continues as an adopter.
- reconstruction pass: an ordinary request whose prompt's repeat the runner scores.
Compressed requests read prefix-cache hits (short of the queries their policy scores with) and write the
prefix cache for their uncompressed span only. Preemption frees everything and drops the offset; the
resumed request adopts again, or recomputes and compacts again (its step cut at the compacted span), then
recomputes its outputs against the compacted K/V, as it first computed them.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any

from vllm.v1.core.kv_cache_utils import KVCacheBlock
from vllm.v1.core.sched.scheduler import Scheduler
from vllm.v1.request import Request

from compression.policies.base import cached_tokens, kept_tokens
from compression.spec import RETENTION_KEY, STATS_KEY, CacheKey, KVTask
from compression.vllm_integration import control
from compression.vllm_integration.context_cache import ContextCache
from compression.vllm_integration.manager import KVCompactKVCacheManager
from compression.vllm_integration.plan import Compaction, ScorePass, StepPlan, cdiv
from compression.vllm_integration.version import check_supported_config, check_vllm_version

log = logging.getLogger("lcrag.kv")


def block_bytes(kv_cache_config: Any) -> int:
    """Bytes of one block across every layer of the (single) KV cache group."""
    return sum(
        group.kv_cache_spec.page_size_bytes * len(group.layer_names)
        for group in kv_cache_config.kv_cache_groups
    )


class KVCompactScheduler(Scheduler):
    """vLLM's scheduler plus prefill-time KV eviction and context caches for requests that ask for them."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        check_vllm_version()
        super().__init__(*args, **kwargs)
        check_supported_config(self.vllm_config, self.kv_cache_config)
        # vLLM builds its KVCacheManager inline in Scheduler.__init__ (no factory): adopt it in place.
        self.kv_cache_manager.__class__ = KVCompactKVCacheManager
        self.kv_cache_manager.kvc_init(block_bytes(self.kv_cache_config))
        self.kvc_requests: dict[str, KVTask] = {}  # requests that evict (their prompt, or a context cache)
        self.kvc_passes: dict[str, KVTask] = {}  # reconstruction passes
        self.kvc_stats: dict[str, dict[str, Any]] = {}
        self.kvc_into: dict[str, list[KVCacheBlock]] = {}  # fresh blocks a planned compaction writes into
        self.kvc_started: dict[str, float] = {}
        self.kvc_retention: dict[str, str] = {}  # what the runner's compaction kept (or the adopted cache's)
        control.register(self)

    @property
    def kvc_manager(self) -> KVCompactKVCacheManager:
        return self.kv_cache_manager  # type: ignore[return-value]

    def add_request(self, request: Request) -> None:
        is_new = request.request_id not in self.requests
        super().add_request(request)
        if not is_new or request.sampling_params is None:
            return
        extra_args = request.sampling_params.extra_args
        try:
            task = KVTask.from_extra_args(extra_args)
        except ValueError as error:  # the HTTP layer validates; a direct engine caller may not have
            log.warning("request %s: KV eviction ignored: %s", request.request_id, error)
            return
        request_id, manager = request.request_id, self.kvc_manager
        if task is None:
            return
        if task.is_pass:
            assert task.context is not None
            self.kvc_passes[request_id] = task
            manager.kvc_hit_limits[request_id] = task.context  # its repeat is computed and scored
            return
        eviction = task
        if eviction.context is not None and eviction.context > request.num_prompt_tokens:
            eviction = dataclasses.replace(eviction, context=request.num_prompt_tokens)
        length = eviction.compressed_length(request.num_prompt_tokens)
        window = eviction.policy.queries_needed()
        self.kvc_requests[request_id] = eviction
        self.kvc_started[request_id] = time.monotonic()
        manager.kvc_hit_limits[request_id] = 0 if window is None else max(0, length - max(1, window))
        manager.kvc_cache_limits[request_id] = length
        if eviction.context is not None:
            lora = request.lora_request.lora_int_id if request.lora_request else 0
            context_ids = request.prompt_token_ids[:length]
            manager.kvc_context_keys[request_id] = CacheKey.of(eviction.spec, context_ids, lora)

    def _update_after_schedule(self, scheduler_output: Any) -> None:
        plan = StepPlan()
        manager = self.kvc_manager
        for request_id, scheduled in list(scheduler_output.num_scheduled_tokens.items()):
            request = self.requests[request_id]
            passing = self.kvc_passes.get(request_id)
            if passing is not None:
                self._plan_pass(plan, scheduler_output, request, passing, scheduled)
            eviction = self.kvc_requests.get(request_id)
            if eviction is None:
                continue
            if request_id in manager.kvc_offsets:
                plan.offsets[request_id] = manager.kvc_offsets[request_id]
                if request_id in manager.kvc_new_adopters:
                    plan.adopt[request_id] = manager.kvc_offsets[request_id]
                    self._adopted(request_id, eviction)
                continue
            length = eviction.compressed_length(request.num_prompt_tokens)
            computed = request.num_computed_tokens
            if computed >= length:
                continue  # nothing (more) to compact: it ran on uncompressed
            if computed + scheduled > length:  # stop at the compacted span (a context, or a resumed prompt)
                scheduled = self._shorten(scheduler_output, request_id, length - computed)
            window = eviction.policy.queries_needed()
            if window != 0:
                plan.capture[request_id] = (0 if window is None else max(0, length - window), length)
            if computed + scheduled == length:
                compaction = self._plan_compaction(request_id, eviction, length)
                if compaction is not None:
                    plan.compact[request_id] = compaction
        manager.kvc_new_adopters.clear()
        scheduler_output.lcrag_kv = plan
        super()._update_after_schedule(scheduler_output)

    def _plan_pass(
        self, plan: StepPlan, scheduler_output: Any, request: Request, passing: KVTask, scheduled: int
    ) -> None:
        prompt, computed = request.num_prompt_tokens, request.num_computed_tokens
        if computed >= prompt:
            return
        if computed + scheduled > prompt:
            scheduled = self._shorten(scheduler_output, request.request_id, prompt - computed)
        assert passing.context is not None and passing.span is not None
        plan.capture[request.request_id] = (passing.context, prompt)
        if computed + scheduled == prompt:
            plan.score[request.request_id] = ScorePass(passing.context, passing.span)

    def _plan_compaction(self, request_id: str, eviction: KVTask, length: int) -> Compaction | None:
        """The compaction of the request's first `length` tokens, or None (with its stats) when it keeps
        them all, or when neither fresh blocks nor its own can take the kept K/V."""
        manager = self.kvc_manager
        must = eviction.policy.must_keep_count(length)
        block_size = manager.kvc_block_size
        cache = eviction.context is not None
        if cache:
            keep = cached_tokens(length, eviction.spec.ratio, must, block_size)
        else:
            keep = kept_tokens(length, eviction.spec.ratio, must, block_size)
        evicts = 0 < keep < length or (cache and keep == length)  # a cache may keep a whole short context
        possible, into = manager.kvc_destination(request_id, length, keep) if evicts else (False, None)
        if not possible:
            log.debug("request %s: no compaction of %d tokens (keep %d)", request_id, length, keep)
            self.kvc_stats[request_id] = _stats(length, length, block_size, "none" if cache else None)
            return None
        if into is not None:
            self.kvc_into[request_id] = into
        ids = tuple(block.block_id for block in into) if into is not None else None
        return Compaction(length, keep, ids, cache)

    @staticmethod
    def _shorten(scheduler_output: Any, request_id: str, tokens: int) -> int:
        """Schedule only `tokens` of the request this step, so the step ends where its K/V is compacted."""
        cut = scheduler_output.num_scheduled_tokens[request_id] - tokens
        scheduler_output.num_scheduled_tokens[request_id] = tokens
        scheduler_output.total_num_scheduled_tokens -= cut
        return tokens

    def _adopted(self, request_id: str, eviction: KVTask) -> None:
        manager = self.kvc_manager
        cache = manager.kvc_caches.get(manager.kvc_context_keys[request_id])
        assert cache is not None
        if eviction.label:
            cache.labels.add(eviction.label)
        stats = _stats(cache.key.context_tokens, cache.kept_tokens, manager.kvc_block_size, "hit")
        self.kvc_stats[request_id] = {**stats, "cache_hits": cache.hits}
        if cache.retention is not None:
            self.kvc_retention[request_id] = cache.retention

    def kvc_retained(self, request_id: str, retention: str) -> None:
        """The runner (in this process) compacted `request_id` this step, keeping `retention`."""
        self.kvc_retention[request_id] = retention

    def update_from_output(self, scheduler_output: Any, model_runner_output: Any) -> dict[int, Any]:
        plan: StepPlan | None = getattr(scheduler_output, "lcrag_kv", None)
        for request_id, compaction in (plan.compact if plan else {}).items():
            self._compacted(request_id, compaction)  # before vLLM frees requests that finished this step
        return super().update_from_output(scheduler_output, model_runner_output)

    def _compacted(self, request_id: str, compaction: Compaction) -> None:
        """The runner compacted the request this step: swap its blocks, and register a built context cache."""
        manager = self.kvc_manager
        into = self.kvc_into.pop(request_id, None)
        _, after = manager.kvc_compact(request_id, compaction, into)
        outcome = None
        if compaction.cache:
            eviction = self.kvc_requests[request_id]
            cache = ContextCache(
                manager.kvc_context_keys[request_id],
                compaction.keep,
                list(manager.kvc_blocks[request_id][:after]),
                labels={eviction.label} if eviction.label else set(),
                build_seconds=time.monotonic() - self.kvc_started[request_id],
                retention=self.kvc_retention.get(request_id),
            )
            outcome = "built" if manager.kvc_caches.add(cache) else "none"  # another request built it first
        self.kvc_stats[request_id] = _stats(
            compaction.length, compaction.keep, manager.kvc_block_size, outcome
        )

    def _free_request(self, request: Request, delay_free_blocks: bool = False) -> tuple[Any, Any]:
        kv_params, ec_params = super()._free_request(request, delay_free_blocks)
        request_id = request.request_id
        for table in (self.kvc_requests, self.kvc_passes, self.kvc_started):
            table.pop(request_id, None)
        self.kvc_manager.kvc_forget(request_id)
        stats = self.kvc_stats.pop(request_id, None)
        retention = self.kvc_retention.pop(request_id, None)
        if stats is not None:
            kv_params = {**(kv_params or {}), STATS_KEY: {**stats, **self.kvc_manager.kvc_caches.totals()}}
            if retention is not None:
                kv_params[RETENTION_KEY] = retention
        return kv_params, ec_params

    def kvc_control(self, operation: str, arguments: dict[str, Any]) -> Any:
        """Context caches for the API server (`control.py`): `list`, or `drop` by label and/or digest."""
        caches = self.kvc_manager.kvc_caches
        if operation == "list":
            return caches.describe()
        if operation == "drop":
            return {
                "dropped": caches.drop(arguments.get("label"), arguments.get("digest")),
                **caches.totals(),
            }
        raise ValueError(f"unknown context cache operation {operation!r}")


def _stats(before: int, after: int, block_size: int, cache: str | None) -> dict[str, Any]:
    stats: dict[str, Any] = {
        "tokens_before": before,
        "tokens_after": after,
        "blocks_before": cdiv(before, block_size),
        "blocks_after": cdiv(after, block_size),
    }
    if cache is not None:
        stats["cache"] = cache
    return stats
