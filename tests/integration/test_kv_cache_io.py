"""Reading and compacting K/V in vLLM's CPU paged cache, checked against vLLM's own cache-write op:
what its op writes, `read_kv` must return in position order; after `compact`, the first slots must hold
each head's kept tokens (an independent per-head loop says which)."""

import pytest
import torch

from compression.vllm_integration.cache_io import compact, read_kv, slots_of, write_kv

pytestmark = pytest.mark.integration
HEADS, BLOCK = 2, 32


def filled_cache(
    isa: str, head_size: int, length: int, block_ids: list[int]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    torch.manual_seed(1)
    cache = torch.zeros(8, HEADS, BLOCK, 2 * head_size)
    keys, values = torch.randn(length, HEADS, head_size), torch.randn(length, HEADS, head_size)
    write_kv(cache, keys, values, slots_of(block_ids, torch.arange(length), BLOCK), isa)
    return cache, keys, values


@pytest.mark.parametrize(("isa", "head_size"), [("vec", 64), ("vec16", 48)])
def test_read_returns_what_vllms_op_wrote_in_position_order(isa: str, head_size: int) -> None:
    block_ids = [5, 2, 7]  # a request's blocks are rarely contiguous
    cache, keys, values = filled_cache(isa, head_size, 70, block_ids)
    read_keys, read_values = read_kv(cache, block_ids, 70, isa)
    assert torch.equal(read_keys, keys.transpose(0, 1)) and torch.equal(read_values, values.transpose(0, 1))


def test_compact_moves_each_heads_kept_tokens_to_the_front() -> None:
    block_ids, length = [6, 1, 3], 90
    cache, keys, values = filled_cache("vec", 64, length, block_ids)
    keep = torch.stack([torch.randperm(length)[:40].sort().values for _ in range(HEADS)])
    compact(cache, block_ids, length, keep, "vec")
    read_keys, read_values = read_kv(cache, block_ids, 40, "vec")
    for head in range(HEADS):
        for slot, position in enumerate(keep[head].tolist()):
            assert torch.equal(read_keys[head, slot], keys[position, head])
            assert torch.equal(read_values[head, slot], values[position, head])


def test_other_isas_are_refused() -> None:
    with pytest.raises(NotImplementedError, match="'amx'"):
        read_kv(torch.zeros(1, HEADS, BLOCK, 128), [0], 4, "amx")
