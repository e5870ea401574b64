"""Compressed context caches, on the scheduler side: which blocks hold each compressed context, and the
reference each cache keeps on them.

A cache holds one reference on each of its blocks (vLLM's `KVCacheBlock.ref_cnt`), so its blocks stay out
of the block pool's free queue while it exists; every request that adopts it adds its own reference
(`BlockPool.touch`) and drops it when it finishes or is preempted (`BlockPool.free_blocks`). Cache blocks
never get a prefix-cache hash: they hold compacted K/V, which no token sequence's hash describes. Releasing
a cache drops its reference; the blocks return to the pool once no adopter holds them. Under memory
pressure idle caches (no adopter) are released least recently used first, before any request is preempted.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from vllm.v1.core.block_pool import BlockPool
from vllm.v1.core.kv_cache_utils import KVCacheBlock

from compression.spec import CacheKey


@dataclass
class ContextCache:
    key: CacheKey
    kept_tokens: int
    blocks: list[KVCacheBlock]
    labels: set[str] = field(default_factory=set)
    build_seconds: float = 0.0
    created_at: float = field(default_factory=time.time)
    last_used_at: float = field(default_factory=time.time)
    hits: int = 0
    retention: str | None = None  # what the compaction kept per context position (`compression.retention`)

    def idle(self) -> bool:
        """No request holds the cache's blocks but the cache itself."""
        return all(block.ref_cnt == 1 for block in self.blocks)

    def describe(self, block_bytes: int) -> dict[str, Any]:
        return {
            "digest": self.key.digest,
            "labels": sorted(self.labels),
            "lora": self.key.lora,
            "policy": self.key.policy,
            "ratio": self.key.ratio,
            "tokens_before": self.key.context_tokens,
            "tokens_after": self.kept_tokens,
            "blocks": len(self.blocks),
            "bytes": len(self.blocks) * block_bytes,
            "hits": self.hits,
            "in_use": not self.idle(),
            "build_seconds": round(self.build_seconds, 3),
            "created_at": self.created_at,
            "last_used_at": self.last_used_at,
        }


class ContextCacheRegistry:
    """The resident context caches, least recently used first."""

    def __init__(self, block_pool: BlockPool, block_bytes: int, block_size: int) -> None:
        self.block_pool = block_pool
        self.block_bytes = block_bytes
        self.block_size = block_size
        self.caches: OrderedDict[CacheKey, ContextCache] = OrderedDict()
        self.released = 0  # caches released under memory pressure, since start

    def get(self, key: CacheKey) -> ContextCache | None:
        return self.caches.get(key)

    def add(self, cache: ContextCache) -> bool:
        """Register `cache`, taking the cache's reference on its blocks; False (nothing taken) if one with
        the same key exists already (two requests built it at once)."""
        if cache.key in self.caches:
            return False
        self.block_pool.touch(cache.blocks)
        self.caches[cache.key] = cache
        return True

    def used(self, cache: ContextCache) -> None:
        """A request adopted `cache`: count the hit and make it the most recently used."""
        cache.hits += 1
        cache.last_used_at = time.time()
        self.caches.move_to_end(cache.key)

    def release(self, cache: ContextCache) -> None:
        """Drop the cache and its reference (its blocks go back to the pool once no adopter holds them)."""
        del self.caches[cache.key]
        self.block_pool.free_blocks(reversed(cache.blocks))

    def release_idle_until(self, free_blocks: int, keep: CacheKey | None = None) -> bool:
        """Release idle caches, least recently used first (never `keep`), until the pool has `free_blocks`
        free; True when it has."""
        while self.block_pool.get_num_free_blocks() < free_blocks:
            idle = next((c for c in self.caches.values() if c.key != keep and c.idle()), None)
            if idle is None:
                return False
            self.release(idle)
            self.released += 1
        return True

    def drop(self, label: str | None = None, digest: str | None = None) -> list[dict[str, Any]]:
        """Release every cache with `label` and/or `digest` (all caches when both are None)."""
        chosen = [
            cache
            for cache in self.caches.values()
            if (label is None or label in cache.labels) and (digest is None or cache.key.digest == digest)
        ]
        described = [cache.describe(self.block_bytes) for cache in chosen]
        for cache in chosen:
            self.release(cache)
        return described

    def describe(self) -> dict[str, Any]:
        caches = [cache.describe(self.block_bytes) for cache in reversed(self.caches.values())]
        return {
            "caches": caches,
            "cached_contexts": len(caches),
            "cache_blocks": sum(entry["blocks"] for entry in caches),
            "cache_bytes": sum(entry["bytes"] for entry in caches),
            "released_under_pressure": self.released,
            "free_blocks": self.block_pool.get_num_free_blocks(),
            "total_blocks": self.block_pool.num_gpu_blocks - 1,
            "block_bytes": self.block_bytes,
            "block_size": self.block_size,
        }

    def totals(self) -> dict[str, int]:
        return {
            "cached_contexts": len(self.caches),
            "cache_blocks": sum(len(cache.blocks) for cache in self.caches.values()),
        }
