"""Reading and compacting K/V in vLLM's CPU paged cache, checked against vLLM's own cache-write op:
what its op writes, `read_kv` must return in position order; after `compact`, the first slots must hold
each head's kept tokens (an independent per-head loop says which). The 'amx' layout (bfloat16) exists only
on CPUs with AMX tiles; its tests skip elsewhere."""

import pytest
import torch

from compression.vllm_integration.cpu.cache_layout import compact, read_kv, slots_of, write_kv

pytestmark = pytest.mark.integration
HEADS, BLOCK = 2, 32
needs_amx = pytest.mark.skipif(
    not torch.cpu._is_amx_tile_supported(), reason="vLLM's 'amx' cache layout needs a CPU with AMX tiles"
)
LAYOUTS = [
    pytest.param("vec", 64, torch.float32, 32, id="vec-fp32"),
    pytest.param("vec", 64, torch.bfloat16, 32, id="vec-bf16"),
    pytest.param("vec16", 48, torch.float32, 32, id="vec16-fp32"),
    pytest.param("amx", 64, torch.bfloat16, 32, id="amx-64", marks=needs_amx),
    pytest.param("amx", 128, torch.bfloat16, 64, id="amx-128-block64", marks=needs_amx),
]


def filled_cache(
    isa: str, head_size: int, length: int, block_ids: list[int], dtype: torch.dtype, block: int = BLOCK
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    torch.manual_seed(1)
    cache = torch.zeros(8, HEADS, block, 2 * head_size, dtype=dtype)
    keys = torch.randn(length, HEADS, head_size).to(dtype)
    values = torch.randn(length, HEADS, head_size).to(dtype)
    write_kv(cache, keys, values, slots_of(block_ids, torch.arange(length), block), isa)
    return cache, keys, values


@pytest.mark.parametrize(("isa", "head_size", "dtype", "block"), LAYOUTS)
def test_read_returns_what_vllms_op_wrote_in_position_order(
    isa: str, head_size: int, dtype: torch.dtype, block: int
) -> None:
    block_ids = [5, 2, 7]  # a request's blocks are rarely contiguous
    cache, keys, values = filled_cache(isa, head_size, 2 * block + 6, block_ids, dtype, block)
    read_keys, read_values = read_kv(cache, block_ids, 2 * block + 6, isa)
    assert torch.equal(read_keys, keys.transpose(0, 1)) and torch.equal(read_values, values.transpose(0, 1))


@pytest.mark.parametrize(
    ("isa", "dtype"),
    [
        pytest.param("vec", torch.float32, id="vec"),
        pytest.param("amx", torch.bfloat16, id="amx", marks=needs_amx),
    ],
)
def test_compact_moves_each_heads_kept_tokens_to_the_front(isa: str, dtype: torch.dtype) -> None:
    block_ids, length = [6, 1, 3], 90
    cache, keys, values = filled_cache(isa, 64, length, block_ids, dtype)
    keep = torch.stack([torch.randperm(length)[:40].sort().values for _ in range(HEADS)])
    compact(cache, block_ids, length, keep, isa)
    read_keys, read_values = read_kv(cache, block_ids, 40, isa)
    for head in range(HEADS):
        for slot, position in enumerate(keep[head].tolist()):
            assert torch.equal(read_keys[head, slot], keys[position, head])
            assert torch.equal(read_values[head, slot], values[position, head])


def test_other_isas_are_refused() -> None:
    with pytest.raises(NotImplementedError, match="'neon'"):
        read_kv(torch.zeros(1, HEADS, BLOCK, 128), [0], 4, "neon")
