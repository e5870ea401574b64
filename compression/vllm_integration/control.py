"""Asking the engine about its context caches from outside it: list, look up, drop.

The API server reaches the engine-core process through vLLM's public `collective_rpc` (a utility call the
engine core runs between steps, on its own thread), which calls `KVCompactWorker.kvc_control` on the
worker. With one worker (vLLM's `UniProcExecutor`, the CPU default) the worker lives in the engine-core
process, next to the scheduler, which registers itself here when it starts; the call is then handed to the
scheduler, which owns the caches. Workers in other processes (tensor parallelism) cannot reach it and say so.

The worker also hands the scheduler what each compaction kept (`report_retention`), the same way: the
scheduler sends it with the request's stats. Under tensor parallelism no retention is reported.
"""

from __future__ import annotations

from typing import Any, Protocol

CONTROL_METHOD = "kvc_control"


class ControlTarget(Protocol):
    def kvc_control(self, operation: str, arguments: dict[str, Any]) -> Any: ...

    def kvc_retained(self, request_id: str, retention: str) -> None: ...


_scheduler: ControlTarget | None = None


def register(scheduler: ControlTarget) -> None:
    global _scheduler
    _scheduler = scheduler


def dispatch(operation: str, arguments: dict[str, Any]) -> Any:
    if _scheduler is None:
        raise RuntimeError(
            "context caches are managed by lcrag's scheduler, which is not in this worker's process "
            "(it is with one worker per engine, tensor_parallel_size 1)"
        )
    return _scheduler.kvc_control(operation, arguments)


def report_retention(request_id: str, retention: str) -> None:
    """The worker compacted `request_id`, keeping `retention` (`compression.retention.encode`); nothing
    happens when the scheduler is in another process."""
    if _scheduler is not None:
        _scheduler.kvc_retained(request_id, retention)


def control(engine: Any, operation: str, **arguments: Any) -> Any:
    """Run `operation` on an in-process offline `vllm.LLM` (tests, benchmarks)."""
    (result,) = engine.collective_rpc(CONTROL_METHOD, args=(operation, arguments))
    return result


async def control_async(engine_client: Any, operation: str, **arguments: Any) -> Any:
    """Run `operation` through an `AsyncLLM` engine client (the API server)."""
    (result,) = await engine_client.collective_rpc(CONTROL_METHOD, args=(operation, arguments))
    return result
