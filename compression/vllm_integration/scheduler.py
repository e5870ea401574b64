"""The scheduler half of KV eviction: it decides when a request's prompt K/V is compacted, returns the
freed trailing blocks to vLLM's block pool, and from then on allocates by *physical* token counts.

vLLM 0.32 pieces used (v1/core/sched/scheduler.py, v1/core/kv_cache_manager.py):
- `Scheduler.add_request`, `_update_after_schedule` (runs at the end of `schedule()`, on the very
  `SchedulerOutput` the worker receives), `update_from_output`, `_free_request` (its first return value
  becomes the finished output's `kv_transfer_params`, our channel for per-request stats);
- `KVCacheManager.allocate_slots` / `free` / `pop_blocks_for_free`, the coordinator's
  `get_num_blocks_to_allocate` / `allocate_new_blocks`, `SingleTypeKVCacheManager.req_to_blocks` and
  `BlockPool.free_blocks` / `evict_blocks`.

Per request: a logical length (`num_computed_tokens`, RoPE positions, max_model_len) and, once compacted,
an offset (evicted tokens) with physical length = logical - offset. Compaction happens when the prompt's
K/V is complete. Compressed requests neither read nor write the prefix cache, so their blocks are never
shared and never carry stale hashes; other requests keep prefix caching. Preemption frees everything and
drops the offset; the resumed request recomputes its prompt (its step is cut at the prompt's end), is
compacted again with the same keep set, then recomputes its outputs against the compacted prompt.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from vllm.v1.core.kv_cache_manager import KVCacheBlocks, KVCacheManager
from vllm.v1.core.sched.scheduler import Scheduler
from vllm.v1.request import Request, RequestStatus

from compression.vllm_integration.options import STATS_KEY, EvictionRequest, from_extra_args
from compression.vllm_integration.version import check_supported_config, check_vllm_version

log = logging.getLogger("lcrag.kv")


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


@dataclass(frozen=True)
class Compaction:
    """A request whose prompt's K/V is complete after this step: `keep` of its `prompt` tokens survive."""

    prompt: int
    keep: int


@dataclass
class StepPlan:
    """What the worker must do this step, sent as `SchedulerOutput.lcrag_kv`.

    capture: requests still computing prompt tokens -> prompt length (the worker keeps their scoring queries)
    compact: requests to compact after this step's forward
    offsets: every scheduled compressed request's offset (the worker asserts it holds the same)
    """

    capture: dict[str, int] = field(default_factory=dict)
    compact: dict[str, Compaction] = field(default_factory=dict)
    offsets: dict[str, int] = field(default_factory=dict)


class KVCompactKVCacheManager(KVCacheManager):
    """vLLM's KV cache manager plus physical-length allocation for compacted requests."""

    kvc_offsets: dict[str, int]  # compacted requests -> evicted tokens
    kvc_uncached: set[str]  # requests that must never enter the prefix cache

    def kvc_init(self) -> None:
        self.kvc_offsets = {}
        self.kvc_uncached = set()

    def allocate_slots(  # type: ignore[override]
        self,
        request: Request,
        num_new_tokens: int,
        num_new_computed_tokens: int = 0,
        new_computed_blocks: KVCacheBlocks | None = None,
        num_lookahead_tokens: int = 0,
        num_external_computed_tokens: int = 0,
        delay_cache_blocks: bool = False,
        num_encoder_tokens: int = 0,
        full_sequence_must_fit: bool = False,
        reserved_blocks: int = 0,
        has_scheduled_reqs: bool = True,
        skip_zeroing_group_ids: tuple[int, ...] = (),
    ) -> KVCacheBlocks | None:
        request_id = request.request_id
        offset = self.kvc_offsets.get(request_id)
        if offset is None:
            return super().allocate_slots(
                request,
                num_new_tokens,
                num_new_computed_tokens=num_new_computed_tokens,
                new_computed_blocks=new_computed_blocks,
                num_lookahead_tokens=num_lookahead_tokens,
                num_external_computed_tokens=num_external_computed_tokens,
                delay_cache_blocks=delay_cache_blocks or request_id in self.kvc_uncached,
                num_encoder_tokens=num_encoder_tokens,
                full_sequence_must_fit=full_sequence_must_fit,
                reserved_blocks=reserved_blocks,
                has_scheduled_reqs=has_scheduled_reqs,
                skip_zeroing_group_ids=skip_zeroing_group_ids,
            )
        assert num_new_computed_tokens == 0 and num_external_computed_tokens == 0, (
            "compacted requests are running"
        )
        return self._allocate_physical(request, num_new_tokens, num_lookahead_tokens, offset, reserved_blocks)

    def _allocate_physical(
        self,
        request: Request,
        num_new_tokens: int,
        num_lookahead_tokens: int,
        offset: int,
        reserved_blocks: int,
    ) -> KVCacheBlocks | None:
        """The base allocation with every count made physical (logical - offset) and no prefix caching."""
        computed = request.num_computed_tokens - offset
        main_model = computed + num_new_tokens
        need_slot = min(
            request.num_computed_tokens + num_new_tokens + num_lookahead_tokens, self.max_model_len
        )
        need_slot -= offset
        wanted = self.coordinator.get_num_blocks_to_allocate(
            request_id=request.request_id,
            num_tokens=need_slot,
            new_computed_blocks=self.empty_kv_cache_blocks.blocks,
            num_encoder_tokens=0,
            total_computed_tokens=computed,
            num_local_computed_tokens=computed,
            num_tokens_main_model=main_model,
        )
        if wanted > self.block_pool.get_num_free_blocks() - reserved_blocks:
            return None
        return self.create_kv_cache_blocks(
            self.coordinator.allocate_new_blocks(request.request_id, need_slot, main_model)
        )

    def kvc_shrink(self, request_id: str, length: int, keep: int) -> tuple[int, int]:
        """Drop the request's blocks past `keep` tokens (its K/V already compacted to the front) back to the
        pool; record the offset. Returns the blocks its `length` prompt tokens filled and the blocks it holds
        now."""
        (manager,) = self.coordinator.single_type_managers
        blocks = manager.req_to_blocks[request_id]
        before, after = cdiv(length, manager.block_size), cdiv(keep, manager.block_size)
        # a resumed request may hold more: blocks allocated for its outputs, which it recomputes next
        assert len(blocks) >= before, f"{request_id}: {len(blocks)} blocks for {length} tokens"
        shared = [block.block_id for block in blocks if block.ref_cnt != 1]
        assert not shared, f"{request_id}: compacted blocks {shared} are shared"
        hashed = {block.block_id for block in blocks if block.block_hash is not None}
        if hashed:  # never the case while compressed requests skip caching; kept as a guard
            self.block_pool.evict_blocks(hashed)
        tail = blocks[after:]
        del blocks[after:]
        self.block_pool.free_blocks(reversed(tail))
        self.kvc_offsets[request_id] = length - keep
        return before, after

    def free(self, request: Request) -> None:
        self.kvc_offsets.pop(request.request_id, None)
        super().free(request)

    def pop_blocks_for_free(self, request: Request) -> list[Any]:
        self.kvc_offsets.pop(request.request_id, None)
        return super().pop_blocks_for_free(request)


class KVCompactScheduler(Scheduler):
    """vLLM's scheduler plus prefill-time KV eviction for requests that ask for it (`extra_args`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        check_vllm_version()
        super().__init__(*args, **kwargs)
        check_supported_config(self.vllm_config, self.kv_cache_config)
        # vLLM builds its KVCacheManager inline in Scheduler.__init__ (no factory): adopt it in place.
        self.kv_cache_manager.__class__ = KVCompactKVCacheManager
        self.kv_cache_manager.kvc_init()
        self.kvc_requests: dict[str, EvictionRequest] = {}
        self.kvc_stats: dict[str, dict[str, int]] = {}

    @property
    def kvc_manager(self) -> KVCompactKVCacheManager:
        return self.kv_cache_manager  # type: ignore[return-value]

    def add_request(self, request: Request) -> None:
        is_new = request.request_id not in self.requests
        super().add_request(request)
        if not is_new or request.sampling_params is None:
            return
        try:
            eviction = from_extra_args(request.sampling_params.extra_args)
        except ValueError as error:  # the HTTP layer validates; a direct engine caller may not have
            log.warning("request %s: KV eviction ignored: %s", request.request_id, error)
            return
        if eviction is None:
            return
        self.kvc_requests[request.request_id] = eviction
        request.skip_reading_prefix_cache = True
        self.kvc_manager.kvc_uncached.add(request.request_id)

    def _update_after_schedule(self, scheduler_output: Any) -> None:
        plan = StepPlan()
        offsets = self.kvc_manager.kvc_offsets
        for request_id, scheduled in list(scheduler_output.num_scheduled_tokens.items()):
            eviction = self.kvc_requests.get(request_id)
            if eviction is None:
                continue
            if request_id in offsets:
                plan.offsets[request_id] = offsets[request_id]
                continue
            request = self.requests[request_id]
            computed, prompt = request.num_computed_tokens, request.num_prompt_tokens
            if computed >= prompt:
                continue
            if computed + scheduled > prompt:  # a resumed request recomputing its outputs: stop at the prompt
                scheduled = self._shorten(scheduler_output, request_id, prompt - computed)
            plan.capture[request_id] = prompt
            if computed + scheduled == prompt:
                plan.compact[request_id] = Compaction(prompt, eviction.kept_prompt_tokens(prompt))
        scheduler_output.lcrag_kv = plan
        super()._update_after_schedule(scheduler_output)

    @staticmethod
    def _shorten(scheduler_output: Any, request_id: str, tokens: int) -> int:
        """Schedule only `tokens` of the request this step. A resumed request's outputs are then recomputed
        against its compacted prompt, exactly as they were first computed, instead of the full prompt."""
        cut = scheduler_output.num_scheduled_tokens[request_id] - tokens
        scheduler_output.num_scheduled_tokens[request_id] = tokens
        scheduler_output.total_num_scheduled_tokens -= cut
        return tokens

    def update_from_output(self, scheduler_output: Any, model_runner_output: Any) -> dict[int, Any]:
        outputs = super().update_from_output(scheduler_output, model_runner_output)
        plan: StepPlan | None = getattr(scheduler_output, "lcrag_kv", None)
        for request_id, compaction in (plan.compact if plan else {}).items():
            request = self.requests.get(request_id)
            if request is None or request.status != RequestStatus.RUNNING:
                continue  # finished (or aborted) in its prefill step: its blocks are already free
            before, after = self.kvc_manager.kvc_shrink(request_id, compaction.prompt, compaction.keep)
            self.kvc_stats[request_id] = {
                "tokens_before": compaction.prompt,
                "tokens_after": compaction.keep,
                "blocks_before": before,
                "blocks_after": after,
            }
        return outputs

    def _free_request(self, request: Request, delay_free_blocks: bool = False) -> tuple[Any, Any]:
        kv_params, ec_params = super()._free_request(request, delay_free_blocks)
        request_id = request.request_id
        self.kvc_requests.pop(request_id, None)
        self.kvc_manager.kvc_uncached.discard(request_id)
        stats = self.kvc_stats.pop(request_id, None)
        if stats is not None:
            kv_params = {**(kv_params or {}), STATS_KEY: stats}
        return kv_params, ec_params
