"""The block accounting of KV eviction: vLLM's KV cache manager, plus physical-length allocation for compacted
requests, context-cache adoption, prefix-cache limits for compressed requests, and the release of idle
context caches before an allocation fails. It keeps no per-request table of its own: it reads and writes
the scheduler's (`state.KVTable`), which it is handed at start.

vLLM 0.32 pieces extended (v1/core/kv_cache_manager.py, single_type_kv_cache_manager.py, block_pool.py):
`KVCacheManager.get_computed_blocks` (a prefix-cache hit, or a context cache to adopt), `allocate_slots`,
`truncate_computed_blocks`, `reset_prefix_cache`; the coordinator's `get_num_blocks_to_allocate`,
`allocate_new_blocks` and `cache_blocks`; `SingleTypeKVCacheManager.req_to_blocks`; `BlockPool.touch`,
`get_new_blocks`, `free_blocks` and `evict_blocks`.

Every count here is in tokens of one request. Logical length: `num_computed_tokens` (RoPE positions,
max_model_len). Physical length: slots it holds K/V in, logical minus its offset once compacted or adopting.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from vllm.v1.core.kv_cache_manager import KVCacheBlocks, KVCacheManager
from vllm.v1.core.kv_cache_utils import KVCacheBlock
from vllm.v1.request import Request

from compression.spec import CacheKey
from compression.vllm_integration.context_cache import ContextCache, ContextCacheRegistry
from compression.vllm_integration.plan import Compaction, cdiv
from compression.vllm_integration.state import KVTable


class KVCompactKVCacheManager(KVCacheManager):
    """vLLM's KV cache manager plus compaction, adoption and context caches (state added by `kvc_init`)."""

    kvc_table: KVTable  # the scheduler's per-request states
    kvc_caches: ContextCacheRegistry

    def kvc_init(self, block_bytes: int, table: KVTable) -> None:
        self.kvc_table = table
        self.kvc_caches = ContextCacheRegistry(self.block_pool, block_bytes, self.kvc_block_size)

    @property
    def kvc_blocks(self) -> dict[str, list[KVCacheBlock]]:
        (manager,) = self.coordinator.single_type_managers
        return manager.req_to_blocks

    @property
    def kvc_block_size(self) -> int:
        (manager,) = self.coordinator.single_type_managers
        return manager.block_size

    def get_computed_blocks(self, request: Request) -> tuple[KVCacheBlocks, int, int]:
        state = self.kvc_table.get(request.request_id)
        if state is not None:
            state.adopting = None
            key = state.cache_key
            cache = self.kvc_caches.get(key) if key is not None else None
            if cache is not None and key is not None and key.context_tokens < request.num_tokens:
                state.adopting = cache
                return self.create_kv_cache_blocks((list(cache.blocks),)), key.context_tokens, 0
        blocks, hit, boundary = super().get_computed_blocks(request)
        if state is not None and hit > state.hit_limit:  # it computes the queries its policy scores with
            hit = state.hit_limit // self.kvc_block_size * self.kvc_block_size
            blocks = self.truncate_computed_blocks(blocks, hit)
        return blocks, hit, boundary

    def allocate_slots(  # type: ignore[override]
        self,
        request: Request,
        num_new_tokens: int,
        num_new_computed_tokens: int = 0,
        new_computed_blocks: KVCacheBlocks | None = None,
        num_lookahead_tokens: int = 0,
        num_external_computed_tokens: int = 0,
        delay_cache_blocks: bool = False,
        **kwargs: Any,
    ) -> KVCacheBlocks | None:
        state = self.kvc_table.get(request.request_id)
        reserved = kwargs.get("reserved_blocks", 0)
        offset = state.offset if state is not None else None
        if offset is not None:
            assert num_new_computed_tokens == 0 and num_external_computed_tokens == 0, "compacted and running"
            return self._or_release_caches(
                lambda: self._allocate_physical(
                    request, num_new_tokens, num_lookahead_tokens, offset, reserved
                )
            )
        cache = state.adopting if state is not None else None
        if cache is not None:
            return self._or_release_caches(
                lambda: self._adopt(request, cache, num_new_tokens, num_lookahead_tokens, reserved), cache.key
            )
        limit = state.cache_limit if state is not None else None
        allocated = self._or_release_caches(
            lambda: super(KVCompactKVCacheManager, self).allocate_slots(
                request,
                num_new_tokens,
                num_new_computed_tokens=num_new_computed_tokens,
                new_computed_blocks=new_computed_blocks,
                num_lookahead_tokens=num_lookahead_tokens,
                num_external_computed_tokens=num_external_computed_tokens,
                delay_cache_blocks=delay_cache_blocks or limit is not None,
                **kwargs,
            )
        )
        if allocated is not None and limit is not None and not delay_cache_blocks:
            # only the uncompressed span, whose K/V match its tokens' hashes, may serve later prefix hits
            computed = request.num_computed_tokens + num_new_computed_tokens + num_external_computed_tokens
            self.cache_blocks(request, min(computed + num_new_tokens, limit, request.num_tokens))
        return allocated

    def _or_release_caches(
        self, allocate: Callable[[], KVCacheBlocks | None], keep: CacheKey | None = None
    ) -> KVCacheBlocks | None:
        """`allocate()`; when the pool is short, release idle context caches (least recently used first,
        never `keep`) one at a time and retry, before the scheduler has to preempt or wait."""
        while True:
            allocated = allocate()
            if allocated is not None:
                return allocated
            free = self.block_pool.get_num_free_blocks()
            if not self.kvc_caches.release_idle_until(free + 1, keep):
                return None

    def _allocate_physical(
        self, request: Request, num_new_tokens: int, num_lookahead_tokens: int, offset: int, reserved: int
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
        if wanted > self.block_pool.get_num_free_blocks() - reserved:
            return None
        return self.create_kv_cache_blocks(
            self.coordinator.allocate_new_blocks(request.request_id, need_slot, main_model)
        )

    def _adopt(
        self,
        request: Request,
        cache: ContextCache,
        num_new_tokens: int,
        num_lookahead_tokens: int,
        reserved: int,
    ) -> KVCacheBlocks | None:
        """Give a newly admitted request the cache's blocks (a reference each) plus blocks for its own
        tokens, which follow the compressed context physically and the full context logically."""
        request_id = request.request_id
        offset = cache.key.context_tokens - cache.kept_tokens
        logical = min(cache.key.context_tokens + num_new_tokens + num_lookahead_tokens, self.max_model_len)
        physical = logical - offset
        wanted = cdiv(physical, self.kvc_block_size) - len(cache.blocks)
        if wanted > self.block_pool.get_num_free_blocks() - reserved:
            return None
        blocks = self.kvc_blocks[request_id]
        assert not blocks, f"{request_id} adopts a context cache but holds blocks"
        self.block_pool.touch(cache.blocks)
        blocks.extend(cache.blocks)
        (new_blocks,) = self.coordinator.allocate_new_blocks(request_id, physical, physical)
        state = self.kvc_table[request_id]
        state.adopting, state.offset, state.adopted = None, offset, True
        self.kvc_caches.used(cache)
        return self.create_kv_cache_blocks((new_blocks,))

    def kvc_destination(
        self, request_id: str, length: int, keep: int
    ) -> tuple[bool, list[KVCacheBlock] | None]:
        """Where a compaction of the request's first `length` tokens down to `keep` can write: (True, fresh
        blocks) or (True, None) for in place, (False, None) when neither can be. Its own, unhashed blocks
        are compacted in place; blocks that are shared or in the prefix cache (whose contents must stay
        intact) are copied to fresh blocks from the free pool, or else, when they are its own, compacted
        in place after all (their hashes dropped); idle context caches are released for fresh blocks only
        when nothing else works."""
        blocks = self.kvc_blocks[request_id][: cdiv(length, self.kvc_block_size)]
        private = all(block.ref_cnt == 1 for block in blocks)
        if private and all(block.block_hash is None for block in blocks):
            return True, None
        needed = cdiv(keep, self.kvc_block_size)
        if self.block_pool.get_num_free_blocks() >= needed:
            return True, self.block_pool.get_new_blocks(needed)
        if private:
            return True, None
        if self.kvc_caches.release_idle_until(needed):
            return True, self.block_pool.get_new_blocks(needed)
        return False, None

    def kvc_compact(
        self, request_id: str, compaction: Compaction, into: list[KVCacheBlock] | None
    ) -> tuple[int, int]:
        """Mirror the runner's compaction: the request's first blocks become the kept ones (`into`, or its
        own first blocks, whose prefix-cache hashes are dropped) and the others go back to the pool. Returns
        the blocks its `length` tokens filled and the blocks its `keep` tokens fill."""
        blocks = self.kvc_blocks[request_id]
        before, after = (
            cdiv(compaction.length, self.kvc_block_size),
            cdiv(compaction.keep, self.kvc_block_size),
        )
        assert len(blocks) >= before, f"{request_id}: {len(blocks)} blocks for {compaction.length} tokens"
        if into is None:
            assert all(block.ref_cnt == 1 for block in blocks[:before]), f"{request_id}: shared blocks"
            self.block_pool.evict_blocks({block.block_id for block in blocks[:after] if block.block_hash})
            freed = blocks[after:before]
            del blocks[after:before]
        else:
            freed = blocks[:before]
            blocks[:before] = into
        self.block_pool.free_blocks(reversed(freed))
        self.kvc_table[request_id].offset = compaction.length - compaction.keep
        return before, after

    def reset_prefix_cache(self) -> bool:
        for cache in [cache for cache in self.kvc_caches.caches.values() if cache.idle()]:
            self.kvc_caches.release(cache)
        return super().reset_prefix_cache()
