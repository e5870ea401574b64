"""The scheduler half of KV eviction: it decides when a request's K/V is compacted and where to, which
requests adopt a resident context cache, and tells the model runner each step (`StepPlan`); the block
accounting itself is `manager.py`'s.

vLLM 0.32 pieces extended (v1/core/sched/scheduler.py): `Scheduler.__init__` (the KV cache manager is
adopted as `KVCompactKVCacheManager`), `add_request`, `_update_after_schedule` (runs at the end of
`schedule()`, on the very `SchedulerOutput` the worker receives), `update_from_output` (reads what the
runner's compactions kept from the `ModelRunnerOutput`), `_preempt_request`, `_free_request` (its first
return value becomes the finished output's `kv_transfer_params`, our channel for per-request stats and
retention). Admission itself is vLLM's: it asks the manager for computed blocks and allocates, preempting
the newest running request when allocation fails. The scheduler is also callable (`__call__`): vLLM's
utility calls into the engine core reach it by the name `scheduler` (`control.py`).

Each request's state is one `RequestKV` in `kvc_table` (`state.py`), shared with the manager; it ends in
`_free_request` only.

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

import logging
import time
from collections import OrderedDict
from typing import Any

from vllm.v1.core.sched.scheduler import Scheduler
from vllm.v1.request import Request

from compression.policies.base import cached_tokens, kept_tokens
from compression.spec import KVTask
from compression.vllm_integration.context_cache import ContextCache
from compression.vllm_integration.manager import KVCompactKVCacheManager
from compression.vllm_integration.plan import (
    RETAINED,
    Compaction,
    RequestStep,
    ScorePass,
    ScoresKey,
    StepPlan,
    cdiv,
)
from compression.vllm_integration.state import KVTable, RequestKV
from compression.vllm_integration.version import check_supported_config, check_vllm_version

log = logging.getLogger("lcrag.kv")
PASS_SCORES_KEPT = 16  # contexts whose reconstruction scores the runner keeps for builds (at any ratio)


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
        self.kvc_table: KVTable = {}  # every request with a KV task, until `_free_request`
        # contexts whose reconstruction scores the runner keeps, least recently scored first
        self.kvc_scored: OrderedDict[ScoresKey, None] = OrderedDict()
        # vLLM builds its KVCacheManager inline in Scheduler.__init__ (no factory): adopt it in place.
        self.kv_cache_manager.__class__ = KVCompactKVCacheManager
        self.kvc_manager.kvc_init(block_bytes(self.kv_cache_config), self.kvc_table)

    @property
    def kvc_manager(self) -> KVCompactKVCacheManager:
        return self.kv_cache_manager  # type: ignore[return-value]

    def add_request(self, request: Request) -> None:
        is_new = request.request_id not in self.requests
        super().add_request(request)
        if not is_new or request.sampling_params is None:
            return
        try:  # the HTTP layer validates; a direct engine caller may not have
            task = KVTask.from_extra_args(request.sampling_params.extra_args)
            if task is not None:
                self.kvc_table[request.request_id] = RequestKV.of(task, request)
        except ValueError as error:
            log.warning("request %s: KV eviction ignored: %s", request.request_id, error)

    def _update_after_schedule(self, scheduler_output: Any) -> None:
        plan = StepPlan()
        for request_id in list(scheduler_output.num_scheduled_tokens):
            state = self.kvc_table.get(request_id)
            if state is None:
                continue
            request = self.requests[request_id]
            if state.task.is_pass:
                step = self._plan_pass(plan, scheduler_output, request, state)
            else:
                step = self._plan_eviction(scheduler_output, request, state)
            if step is not None:
                plan.requests[request_id] = step
        scheduler_output.lcrag_kv = plan
        super()._update_after_schedule(scheduler_output)

    def _plan_eviction(self, scheduler_output: Any, request: Request, state: RequestKV) -> RequestStep | None:
        if state.offset is not None:  # compacted or adopting: the runner maps it to its physical slots
            if state.adopted:
                state.adopted = False
                self._adopted(state)
            return RequestStep(offset=state.offset)
        length, computed = state.length, request.num_computed_tokens
        if computed >= length:
            return None  # nothing (more) to compact: it ran on uncompressed
        scheduled = scheduler_output.num_scheduled_tokens[request.request_id]
        if computed + scheduled > length:  # stop at the compacted span (a context, or a resumed prompt)
            scheduled = self._shorten(scheduler_output, request.request_id, length - computed)
        policy = state.task.policy
        window = policy.queries_needed()
        capture = None if window == 0 else (0 if window is None else max(0, length - window), length)
        compaction = (
            self._plan_compaction(request.request_id, state) if computed + scheduled == length else None
        )
        if capture is None and compaction is None:
            return None
        scores_key = state.scores_key if compaction is not None else None
        return RequestStep(policy=policy, capture=capture, compaction=compaction, scores_key=scores_key)

    def _plan_pass(
        self, plan: StepPlan, scheduler_output: Any, request: Request, state: RequestKV
    ) -> RequestStep | None:
        prompt, computed = request.num_prompt_tokens, request.num_computed_tokens
        if computed >= prompt:
            return None
        scheduled = scheduler_output.num_scheduled_tokens[request.request_id]
        if computed + scheduled > prompt:
            scheduled = self._shorten(scheduler_output, request.request_id, prompt - computed)
        task = state.task
        assert task.context is not None and task.span is not None and state.scores_key is not None
        capture = (task.context, prompt)
        if computed + scheduled < prompt:
            return RequestStep(policy=task.policy, capture=capture)
        plan.forget_scores.extend(self._scored(state.scores_key))
        score_pass = ScorePass(task.context, task.span)
        return RequestStep(
            policy=task.policy, capture=capture, score_pass=score_pass, scores_key=state.scores_key
        )

    def _scored(self, key: ScoresKey) -> list[ScoresKey]:
        """The runner scores a pass over `key`'s context this step: keep it as the most recently scored, and
        return the contexts whose scores the runner forgets to keep `PASS_SCORES_KEPT`."""
        self.kvc_scored[key] = None
        self.kvc_scored.move_to_end(key)
        forgotten = []
        while len(self.kvc_scored) > PASS_SCORES_KEPT:
            forgotten.append(self.kvc_scored.popitem(last=False)[0])
        return forgotten

    def _plan_compaction(self, request_id: str, state: RequestKV) -> Compaction | None:
        """The compaction of the request's first `state.length` tokens, or None (with its stats) when it keeps
        them all, or when neither fresh blocks nor its own can take the kept K/V."""
        manager, length, eviction = self.kvc_manager, state.length, state.task
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
            state.stats = _stats(length, length, block_size, "none" if cache else None)
            return None
        state.into = into
        ids = tuple(block.block_id for block in into) if into is not None else None
        return Compaction(length, keep, ids, cache)

    @staticmethod
    def _shorten(scheduler_output: Any, request_id: str, tokens: int) -> int:
        """Schedule only `tokens` of the request this step, so the step ends where its K/V is compacted."""
        cut = scheduler_output.num_scheduled_tokens[request_id] - tokens
        scheduler_output.num_scheduled_tokens[request_id] = tokens
        scheduler_output.total_num_scheduled_tokens -= cut
        return tokens

    def _adopted(self, state: RequestKV) -> None:
        manager = self.kvc_manager
        assert state.cache_key is not None
        cache = manager.kvc_caches.get(state.cache_key)
        assert cache is not None
        if state.task.label:
            cache.labels.add(state.task.label)
        stats = _stats(cache.key.context_tokens, cache.kept_tokens, manager.kvc_block_size, "hit")
        state.stats = {**stats, "cache_hits": cache.hits}
        if cache.retention is not None:
            state.retention = cache.retention

    def update_from_output(self, scheduler_output: Any, model_runner_output: Any) -> dict[int, Any]:
        for request_id, retention in (getattr(model_runner_output, RETAINED, None) or {}).items():
            state = self.kvc_table.get(request_id)
            if state is not None:
                state.retention = retention
        plan: StepPlan | None = getattr(scheduler_output, "lcrag_kv", None)
        for request_id, step in (plan.requests if plan else {}).items():
            if step.compaction is not None:  # before vLLM frees requests that finished this step
                self._compacted(self.kvc_table[request_id], request_id, step.compaction)
        return super().update_from_output(scheduler_output, model_runner_output)

    def _compacted(self, state: RequestKV, request_id: str, compaction: Compaction) -> None:
        """The runner compacted the request this step: swap its blocks, and register a built context cache."""
        manager = self.kvc_manager
        into, state.into = state.into, None
        _, after = manager.kvc_compact(request_id, compaction, into)
        outcome = None
        if compaction.cache:
            assert state.cache_key is not None
            cache = ContextCache(
                state.cache_key,
                compaction.keep,
                list(manager.kvc_blocks[request_id][:after]),
                labels={state.task.label} if state.task.label else set(),
                build_seconds=time.monotonic() - state.started,
                retention=state.retention,
            )
            outcome = "built" if manager.kvc_caches.add(cache) else "none"  # another request built it first
        state.stats = _stats(compaction.length, compaction.keep, manager.kvc_block_size, outcome)

    def _preempt_request(self, request: Request, *args: Any, **kwargs: Any) -> None:
        super()._preempt_request(request, *args, **kwargs)
        state = self.kvc_table.get(request.request_id)
        if state is not None:
            state.preempted()

    def _free_request(self, request: Request, delay_free_blocks: bool = False) -> tuple[Any, Any]:
        """The one place a request's KV state ends: finished, stopped or aborted."""
        kv_params, ec_params = super()._free_request(request, delay_free_blocks)
        state = self.kvc_table.pop(request.request_id, None)
        if state is not None:
            kv_params = state.report(kv_params, self.kvc_manager.kvc_caches.totals())
        return kv_params, ec_params

    def __call__(self, operation: str, arguments: dict[str, Any]) -> Any:
        """Context caches for the API server (`control.py`): `list` (with the contexts whose reconstruction
        scores the runner keeps: a build at another ratio needs no passes), or `drop` by label and/or
        digest."""
        caches = self.kvc_manager.kvc_caches
        if operation == "list":
            return {**caches.describe(), "scored_contexts": [list(key) for key in self.kvc_scored]}
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
