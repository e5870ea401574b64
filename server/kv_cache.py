"""Compressed context caches, from the API server's side: building one for a collection ahead of its first
question, running a KVzip-style policy's reconstruction passes before a build, listing, dropping, and the
Prometheus gauges. The engine keeps the caches (compression/vllm_integration/); this talks to it through the
engine only: `Engine.generate` for passes and builds, a control call for the rest (`control.py`).
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from compression.policies.base import ReconstructionPolicy
from compression.reconstruction import ReconstructionError, reconstruction_passes
from compression.spec import STATS_KEY, CacheKey, KVSpec, KVTask
from compression.vllm_integration.control import control_async
from compression.vllm_integration.stats import record_totals
from server.engine import Engine
from server.errors import BadRequestError, ServiceUnavailableError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


@dataclass
class ContextCaches:
    engine: Engine
    tokenizer: PreTrainedTokenizerBase
    max_model_len: int
    _locks: weakref.WeakValueDictionary[str, asyncio.Lock] = field(
        default_factory=weakref.WeakValueDictionary
    )

    def cache_key(self, context_ids: Sequence[int], kv: KVSpec, model: str | None) -> CacheKey:
        lora = self.engine.lora_request(model)
        return CacheKey.of(kv, context_ids, lora.lora_int_id if lora else 0)

    async def describe(self, label: str | None = None) -> dict[str, Any]:
        listing = await control_async(self.engine.client, "list")
        record_totals(listing)
        if label is not None:
            listing["caches"] = [cache for cache in listing["caches"] if label in cache["labels"]]
        return listing

    async def drop(self, label: str | None = None) -> dict[str, Any]:
        dropped = await control_async(self.engine.client, "drop", label=label)
        record_totals(dropped)
        return dropped

    async def find(self, context_ids: Sequence[int], kv: KVSpec, model: str | None) -> dict[str, Any] | None:
        """The resident cache of exactly this context, policy, ratio and adapter, if any."""
        return self._match(await self.describe(), context_ids, kv, model)

    def _match(
        self, listing: dict[str, Any], context_ids: Sequence[int], kv: KVSpec, model: str | None
    ) -> dict[str, Any] | None:
        wanted = self.cache_key(context_ids, kv, model)
        return next((cache for cache in listing["caches"] if CacheKey.of_listing(cache) == wanted), None)

    async def prepare(
        self, context_ids: Sequence[int], kv: KVSpec, model: str | None, param: str = "lcrag.kv"
    ) -> int:
        """Before a request compresses `context_ids` (a collection's context, or a whole prompt): a policy
        that scores by reconstruction gets its passes run, unless the engine keeps their scores or the cache
        is resident already; a context too long for them is a 400 naming `param`. Returns the passes run."""
        policy = kv.policy_object
        if not isinstance(policy, ReconstructionPolicy):
            return 0
        key = self.cache_key(context_ids, kv, model)
        lock = self._locks.setdefault(key.digest, asyncio.Lock())  # one build of a context at a time
        async with lock:
            listing = await self.describe()
            if key.scores_key() in listing["scored_contexts"] or self._match(listing, context_ids, kv, model):
                return 0  # the engine keeps this context's scores, or the cache itself
            try:
                passes = reconstruction_passes(context_ids, self.tokenizer, policy.repeat, self.max_model_len)
            except ReconstructionError as error:
                raise BadRequestError(f"KV policy {kv.policy!r}: {error}.", param=param) from None
            first, *rest = passes
            await self._reconstruct(first, kv, len(context_ids), model)
            # the later passes read the context from vLLM's prefix cache, filled by the first
            await asyncio.gather(*(self._reconstruct(later, kv, len(context_ids), model) for later in rest))
            return len(passes)

    async def _reconstruct(self, reconstruction: Any, kv: KVSpec, context: int, model: str | None) -> None:
        await self._generate(reconstruction.prompt, kv.scoring_pass(context, reconstruction.span), model)

    async def build(
        self, context_ids: Sequence[int], kv: KVSpec, model: str | None, label: str
    ) -> dict[str, Any]:
        """Compress a collection's context now (reconstruction passes first, if the policy needs them) and
        report what the engine did: `cache` is `hit` when it was resident already, `built` when made now."""
        started = time.perf_counter()
        existing = await self.find(context_ids, kv, model)
        if existing is not None:
            return {**existing, "cache": "hit", "build_ms": 0.0, "passes": 0}
        passes = await self.prepare(context_ids, kv, model, param="policy")
        stats = await self._generate(list(context_ids), kv.task(len(context_ids), label), model)
        if stats is None or stats.get("cache") != "built":
            raise ServiceUnavailableError(
                "The engine could not keep a compressed context for this collection now: the KV cache is "
                "full of running requests (or the context is shorter than one block). Retry later.",
                param="policy",
            )
        built = await self.find(context_ids, kv, model)
        return {
            **(built or stats),
            "cache": "built",
            "build_ms": round((time.perf_counter() - started) * 1000, 1),
            "passes": passes,
        }

    async def _generate(self, prompt: list[int], task: KVTask, model: str | None) -> dict[str, Any] | None:
        """One prompt-only engine request (one token sampled) doing `task`; its KV stats."""
        from vllm import SamplingParams

        params = SamplingParams(max_tokens=1, temperature=0.0, extra_args=task.extra_args())
        final = None
        async for output in self.engine.generate(prompt, params, model):
            final = output
        return ((final.kv_transfer_params or {}) if final is not None else {}).get(STATS_KEY)
