"""What the scheduler tells the model runner each step (`SchedulerOutput.lcrag_kv`): per scheduled request,
everything the runner acts on, so the runner keeps no per-request state of its own but device data (the
queries and scores it computes). Plain picklable data: under tensor parallelism vLLM pickles the
`SchedulerOutput` to worker processes.

Extends: `vllm.v1.core.sched.output.SchedulerOutput` (one attribute added, `lcrag_kv`) and
`vllm.v1.outputs.ModelRunnerOutput` (one attribute added, `RETAINED`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from compression.policies import Policy

ScoresKey = tuple[int | str, ...]  # `CacheKey.scores_key()`: LoRA id, policy with options, context digest
# The way back: the runner's `ModelRunnerOutput` attribute (request id -> `compression.retention.encode` of
# what its compaction kept), read by the scheduler's `update_from_output`.
RETAINED = "lcrag_kv_retained"


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


@dataclass(frozen=True)
class RequestStep:
    """One scheduled request's part of a step.
    offset: tokens evicted before its K/V (compacted or adopting): its cache slots and sequence length are
      its logical positions minus this;
    policy: its eviction policy, set whenever one of the following is;
    capture: positions [lo, hi) whose queries the runner keeps while they are computed;
    compaction: compact its K/V after this step's forward pass;
    score_pass: score a reconstruction pass after this step's forward pass;
    scores_key: the context whose reconstruction scores the compaction reads or the pass adds to."""

    offset: int = 0
    policy: Policy | None = None
    capture: tuple[int, int] | None = None
    compaction: Compaction | None = None
    score_pass: ScorePass | None = None
    scores_key: ScoresKey | None = None


@dataclass
class StepPlan:
    """requests: every scheduled request that has an offset or work this step;
    forget_scores: contexts whose reconstruction scores the runner drops once this step is done (the
    scheduler keeps the most recently scored ones)."""

    requests: dict[str, RequestStep] = field(default_factory=dict)
    forget_scores: list[ScoresKey] = field(default_factory=list)

    def offsets(self) -> dict[str, int]:
        return {request_id: step.offset for request_id, step in self.requests.items() if step.offset}

    def work(self) -> dict[str, RequestStep]:
        """The requests the runner scores, captures or compacts this step."""
        return {request_id: step for request_id, step in self.requests.items() if step.policy is not None}
