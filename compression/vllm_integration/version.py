"""The vLLM version and engine configuration the eviction patches were written and tested against; anything
else is refused at engine start with a message that says what to change."""

from __future__ import annotations

from typing import Any

SUPPORTED_VLLM = "0.32.0"


class UnsupportedEngineError(RuntimeError):
    """The running vLLM or its configuration cannot host KV eviction."""


def check_vllm_version(installed: str | None = None) -> None:
    if installed is None:
        import vllm

        installed = vllm.__version__
    if installed.split("+")[0] != SUPPORTED_VLLM:
        raise UnsupportedEngineError(
            f"lcrag's KV eviction patches vLLM internals and supports vLLM {SUPPORTED_VLLM} only; found "
            f"{installed}. Install the pinned version (`make setup`) or start without KV eviction."
        )


def check_kv_heads_split(kv_heads: int, ranks: int) -> None:
    """Each tensor-parallel rank scores and compacts its own KV heads, so they must split evenly; vLLM would
    replicate a head on several ranks instead, and their evictions could differ."""
    if ranks > 1 and kv_heads % ranks:
        raise UnsupportedEngineError(
            f"KV eviction needs the model's {kv_heads} KV heads split evenly over --tensor-parallel-size "
            f"{ranks} (vLLM would replicate them); choose a size that divides {kv_heads}, or serve "
            "without KV eviction (--no-kv-eviction)."
        )


def check_readable_cache(layer_isas: dict[str, str | None], readable: tuple[str, ...]) -> None:
    """Every attention layer's CPU cache layout ("ISA", chosen by vLLM from dtype, block size and CPU) must be
    one whose packing the eviction code reads; checked once the KV cache exists, before any request."""
    unreadable = sorted({str(isa) for isa in layer_isas.values() if isa not in readable})
    if unreadable:
        raise UnsupportedEngineError(
            f"KV eviction cannot read vLLM's CPU attention cache in layout {', '.join(unreadable)} (it reads "
            f"{', '.join(readable)}); ARM (NEON), PowerPC, s390x and RISC-V layouts are not supported. "
            "Start without KV eviction (--no-kv-eviction)."
        )


def check_supported_config(vllm_config: Any, kv_cache_config: Any) -> None:
    """One full-attention KV cache group, synchronous scheduling, no speculative decoding, no KV connector, a
    KV cache in the model's own dtype (not fp8)."""
    from vllm.v1.kv_cache_interface import FullAttentionSpec

    problems = []
    groups = kv_cache_config.kv_cache_groups
    if len(groups) != 1 or type(groups[0].kv_cache_spec) is not FullAttentionSpec:
        found = ", ".join(sorted({type(group.kv_cache_spec).__name__ for group in groups}))
        problems.append(
            "the model must use full attention in a single KV cache group (no sliding window, hybrid or MLA "
            f"attention; found {found})"
        )
    if vllm_config.speculative_config is not None:
        problems.append("speculative decoding must be off")
    if vllm_config.kv_transfer_config is not None:
        problems.append("KV connectors (offload, disaggregated prefill) must be off")
    if vllm_config.scheduler_config.async_scheduling:
        problems.append("async scheduling must be off (--no-async-scheduling)")
    cache_dtype = str(getattr(vllm_config.cache_config, "cache_dtype", "auto"))
    if cache_dtype.startswith("fp8"):
        problems.append(
            f"the KV cache must hold the model's dtype (--kv-cache-dtype auto), not {cache_dtype}: "
            "eviction reads and rewrites K/V unscaled"
        )
    if problems:
        raise UnsupportedEngineError(
            "KV eviction cannot run with this engine configuration: "
            + "; ".join(problems)
            + ". Change that, or serve without KV eviction (--no-kv-eviction)."
        )
