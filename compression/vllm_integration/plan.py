"""What the scheduler tells the model runner each step (`SchedulerOutput.lcrag_kv`), in plain data, so the
two halves stay in lockstep without sharing state."""

from __future__ import annotations

from dataclasses import dataclass, field


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


@dataclass(frozen=True)
class Compaction:
    """After this step the request's first `length` tokens (its prompt, or a shared context) shrink to
    `keep`: the kept K/V are written into `into` (fresh blocks that replace the first blocks) or, when
    `into` is None, in place. With `cache`, the kept blocks become a shared context cache."""

    length: int
    keep: int
    into: tuple[int, ...] | None = None
    cache: bool = False

    def block_ids_after(self, block_ids: list[int], block_size: int) -> list[int]:
        """The request's block ids once compacted: the kept blocks, then any it holds past `length`."""
        rest = block_ids[cdiv(self.length, block_size) :]
        kept = list(self.into) if self.into is not None else block_ids[: cdiv(self.keep, block_size)]
        return kept + rest


@dataclass(frozen=True)
class ScorePass:
    """A reconstruction pass completes its prompt this step: score `span` of its `context` leading tokens
    with the queries after them (the repeat)."""

    context: int
    span: tuple[int, int]


@dataclass
class StepPlan:
    """capture: request -> positions [lo, hi) whose queries the runner keeps while they are computed
    compact: requests to compact after this step's forward pass
    score: reconstruction passes to score after this step's forward pass
    adopt: requests that adopted a context cache this step -> their offset (the runner learns it here)
    offsets: every scheduled compacted or adopting request's offset (the runner asserts it holds the same)"""

    capture: dict[str, tuple[int, int]] = field(default_factory=dict)
    compact: dict[str, Compaction] = field(default_factory=dict)
    score: dict[str, ScorePass] = field(default_factory=dict)
    adopt: dict[str, int] = field(default_factory=dict)
    offsets: dict[str, int] = field(default_factory=dict)
