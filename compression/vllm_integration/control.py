"""Asking the engine about its context caches from outside it: list, look up, drop.

The scheduler owns the caches, so callers reach it with vLLM's utility call, which the engine core runs
between steps on its own thread: `EngineCoreProc._handle_client_request` looks the method name up on the
`EngineCore` and calls it, so the name `scheduler` resolves to `EngineCore.scheduler`, our
`KVCompactScheduler`, which is callable (`__call__(operation, arguments)`). The multiprocess clients send
it (`SyncMPClient.call_utility`, `AsyncMPClient.call_utility_async`: the API server's `AsyncLLM`); the
in-process client (`InprocClient`, `VLLM_ENABLE_V1_MULTIPROCESSING=0`) has no utility calls, and its
`EngineCore` is in this process, so its scheduler is called directly. Works at any tensor-parallel size:
the scheduler is in the engine-core process, whatever the workers'.

Extends: `vllm.v1.engine.core_client` (`call_utility`, `call_utility_async`) and
`vllm.v1.engine.core.EngineCoreProc._handle_client_request` (utility requests), both unchanged.
"""

from __future__ import annotations

from typing import Any

UTILITY = "scheduler"  # the `EngineCore` attribute a utility call by this name runs: our scheduler


def control(engine: Any, operation: str, **arguments: Any) -> Any:
    """Run `operation` on an offline `vllm.LLM` (tests, benchmarks), in this process or not."""
    client = engine.llm_engine.engine_core
    if hasattr(client, "call_utility"):  # the engine core runs in another process
        return client.call_utility(UTILITY, operation, arguments)
    return getattr(client.engine_core, UTILITY)(operation, arguments)  # `InprocClient`: it is here


async def control_async(engine_client: Any, operation: str, **arguments: Any) -> Any:
    """Run `operation` through an `AsyncLLM` engine client (the API server)."""
    return await engine_client.engine_core.call_utility_async(UTILITY, operation, arguments)
