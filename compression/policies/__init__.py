"""The built-in eviction policies, one idea per class (see each docstring for its paper)."""

from compression.policies.attention import H2O, TOVA, ChunkKV, ExpectedAttention, SnapKV
from compression.policies.base import LayerView, Policy, keep_indices, kept_count
from compression.policies.reconstruction import KVzip
from compression.policies.simple import KeyNorm, NoEviction, RandomEviction, StreamingLLM

BUILT_IN: tuple[type[Policy], ...] = (
    NoEviction, StreamingLLM, SnapKV, ChunkKV, H2O, TOVA, KeyNorm, RandomEviction, ExpectedAttention, KVzip
)  # fmt: skip

__all__ = ["BUILT_IN", "LayerView", "Policy", "keep_indices", "kept_count"]
