"""The worker half of KV eviction: it keeps the queries a request's policy scores with while they are
computed, scores each layer's K/V right after that layer's attention in the step that completes the
compressed span, and compacts every layer once the forward pass is done (so a policy can let the layers
vote on one keep set), into fresh blocks or in place, as the scheduler planned; it scores reconstruction
passes into per-context scores kept for a later cache build; and it maps compacted or adopting requests'
logical positions (RoPE) to physical cache slots and sequence lengths. What each compaction kept per
position goes to the scheduler, in this process (`control.report_retention`).

vLLM 0.32 pieces extended (v1/worker/cpu_worker.py, cpu_model_runner.py, gpu_model_runner.py):
- `CPUWorker.init_device` builds the V1 `CPUModelRunner` (with `VLLM_USE_V2_MODEL_RUNNER=0`); we adopt
  that instance as `KVCompactRunner` (a subclass adding methods only);
- `GPUModelRunner._update_states`, `_prepare_inputs` (fills `positions`, `seq_lens`,
  `optimistic_seq_lens_cpu`, `query_start_loc`, `req_indices` and the block tables' slot mapping),
  `execute_model`, `load_model`, `initialize_kv_cache`, `requests[req_id].block_ids`,
  `input_batch.block_table`;
- each attention layer's `impl.forward(layer, query, key, value, kv_cache, attn_metadata, output, ...)`
  (layers in `compilation_config.static_forward_context`), wrapped to run after the original;
- under tensor parallelism, `vllm.distributed.get_tp_group()` (`all_gather`, `rank_in_group`,
  `world_size`): each rank holds a contiguous slice of the query and KV heads, so policies score with every
  rank's heads gathered (several pool over heads) and each rank keeps its own slice of the scores.
What to do each step comes from the scheduler as `SchedulerOutput.lcrag_kv` (a `StepPlan`).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from vllm.v1.worker.cpu_model_runner import CPUModelRunner
from vllm.v1.worker.cpu_worker import CPUWorker

from compression import retention
from compression.policies import LayerView, Policy, keep_indices
from compression.policies.base import Rotary
from compression.policies.reconstruction import ReconstructionView
from compression.spec import CacheKey, KVTask
from compression.vllm_integration import control
from compression.vllm_integration.cache_io import READABLE_ISAS, compact_kv, read_kv
from compression.vllm_integration.plan import Compaction, ScorePass, StepPlan
from compression.vllm_integration.version import (
    UnsupportedEngineError,
    check_kv_heads_split,
    check_readable_cache,
)

log = logging.getLogger("lcrag.kv")
PASS_SCORES_KEPT = 16  # contexts whose reconstruction scores are kept for builds (at any ratio)
PassKey = tuple[int | str, ...]  # `CacheKey.scores_key()`: LoRA id, policy with options, context digest


@dataclass(frozen=True)
class RowWork:
    """One request's share of this step: its rows in the flattened batch and what to do with them."""

    request_id: str
    policy: Policy
    query_start: int  # index of its first token in this step's flattened batch
    first_position: int  # logical position of that token
    num_tokens: int
    capture: tuple[int, int] | None  # positions whose queries are kept
    compaction: Compaction | None  # set on the step that completes the compacted span
    score_pass: ScorePass | None  # set on the step that completes a reconstruction pass's prompt
    pass_key: PassKey | None  # the context's reconstruction scores, for policies scored by passes

    def captured_range(self) -> tuple[int, int] | None:
        """This step's positions within `capture`."""
        if self.capture is None:
            return None
        lo = max(self.capture[0], self.first_position)
        hi = min(self.capture[1], self.first_position + self.num_tokens)
        return (lo, hi) if lo < hi else None


class KVCompactRunner(CPUModelRunner):
    """vLLM's CPU model runner plus per-request eviction (state added by `kvc_init`)."""

    kvc_offsets: dict[str, int]
    kvc_queries: dict[str, dict[int, list[torch.Tensor]]]  # request -> layer -> [tokens, q_heads, head_dim]
    kvc_work: list[RowWork]
    kvc_scores: dict[str, dict[int, torch.Tensor]]  # request -> layer -> its own scores, this step only
    kvc_caches: dict[int, tuple[torch.Tensor, str]]  # layer -> (KV cache, layout)
    kvc_pass_scores: OrderedDict[PassKey, dict[int, torch.Tensor]]  # -> layer -> [kv_heads, context]
    kvc_rotary: Rotary | None
    kvc_tp: Any  # vLLM's tensor-parallel group coordinator

    def kvc_init(self) -> None:
        self.kvc_offsets = {}
        self.kvc_queries = {}
        self.kvc_work = []
        self.kvc_scores = {}
        self.kvc_caches = {}
        self.kvc_pass_scores = OrderedDict()
        self.kvc_rotary = None
        from vllm.distributed import get_tp_group

        self.kvc_tp = get_tp_group()

    def load_model(self, *args: Any, **kwargs: Any) -> None:
        super().load_model(*args, **kwargs)
        check_kv_heads_split(self.model_config.get_total_num_kv_heads(), self.kvc_tp.world_size)
        self.kvc_rotary = self._kvc_find_rotary()
        wrapped = self._kvc_wrap_attention_layers()
        if not wrapped:
            raise UnsupportedEngineError(
                "KV eviction found no attention layer with its own KV cache to wrap in "
                f"{type(self.model).__name__}; serve this model without KV eviction (--no-kv-eviction)."
            )

    def _kvc_find_rotary(self) -> Rotary | None:
        """The model's RoPE table (vLLM's `RotaryEmbedding.cos_sin_cache`: cos then sin per position), for
        policies that reason about positions; None if it has none in the rotate-half convention."""
        for module in self.model.modules():
            table = getattr(module, "cos_sin_cache", None)
            if isinstance(table, torch.Tensor) and getattr(module, "is_neox_style", False):
                return rotary_of_table(table.float().cpu())
        return None

    def initialize_kv_cache(self, *args: Any, **kwargs: Any) -> None:
        super().initialize_kv_cache(*args, **kwargs)
        check_readable_cache(
            {name: getattr(layer, "isa", None) for name, layer in self._kvc_attention_layers().items()},
            READABLE_ISAS,
        )

    def _kvc_attention_layers(self) -> dict[str, Any]:
        """The attention layers that own a KV cache, by name."""
        from vllm.model_executor.layers.attention.attention import Attention

        layers = self.vllm_config.compilation_config.static_forward_context
        return {
            name: layer
            for name, layer in layers.items()
            if isinstance(layer, Attention) and layer.kv_sharing_target_layer_name is None
        }

    def _kvc_wrap_attention_layers(self) -> int:
        from vllm.model_executor.models.utils import extract_layer_index

        layers = self._kvc_attention_layers()
        for name, layer in layers.items():
            layer.impl.forward = self._kvc_wrapped(extract_layer_index(name), layer.impl.forward)
        return len(layers)

    def _kvc_wrapped(
        self, layer_index: int, forward: Callable[..., torch.Tensor]
    ) -> Callable[..., torch.Tensor]:
        def forward_then_evict(
            layer: Any,
            query: torch.Tensor,
            key: torch.Tensor,
            value: torch.Tensor,
            kv_cache: torch.Tensor,
            attn_metadata: Any,
            *args: Any,
            **kwargs: Any,
        ) -> torch.Tensor:
            result = forward(layer, query, key, value, kv_cache, attn_metadata, *args, **kwargs)
            if self.kvc_work and attn_metadata is not None:
                self._kvc_after_attention(layer_index, query, kv_cache, layer.isa)
            return result

        return forward_then_evict

    def _update_states(self, scheduler_output: Any) -> Any:
        cached = scheduler_output.scheduled_cached_reqs
        for request_id in (
            *scheduler_output.finished_req_ids,
            *(scheduler_output.preempted_req_ids or ()),
            *cached.resumed_req_ids,
        ):
            self.kvc_offsets.pop(request_id, None)
            self.kvc_queries.pop(request_id, None)
        return super()._update_states(scheduler_output)

    def _prepare_inputs(self, scheduler_output: Any, num_scheduled_tokens: Any) -> Any:
        result = super()._prepare_inputs(scheduler_output, num_scheduled_tokens)
        plan: StepPlan | None = getattr(scheduler_output, "lcrag_kv", None)
        self.kvc_work = []
        if plan is None:
            assert not self.kvc_offsets, (
                "KV eviction: the scheduler sent no plan but the worker holds offsets"
            )
            return result
        self.kvc_offsets.update(plan.adopt)
        self._kvc_check_lockstep(plan, scheduler_output.num_scheduled_tokens)
        if plan.offsets:
            self._kvc_apply_offsets(plan.offsets)
        for request_id in plan.capture.keys() | plan.compact.keys() | plan.score.keys():
            self.kvc_work.append(self._kvc_row_work(request_id, plan))
        return result

    def _kvc_check_lockstep(self, plan: StepPlan, scheduled: dict[str, int]) -> None:
        mine = {
            request_id: offset for request_id, offset in self.kvc_offsets.items() if request_id in scheduled
        }
        assert mine == plan.offsets, f"KV eviction out of lockstep: worker {mine}, scheduler {plan.offsets}"

    def _kvc_apply_offsets(self, offsets: dict[str, int]) -> None:
        """Physical sequence lengths and cache slots for compacted requests; positions stay logical."""
        num_reqs = self.input_batch.num_reqs
        offset = torch.zeros(num_reqs, dtype=torch.int64)
        for request_id, evicted in offsets.items():
            offset[self.input_batch.req_id_to_index[request_id]] = evicted
        self.seq_lens[:num_reqs] -= offset.to(self.seq_lens.dtype)
        self.optimistic_seq_lens_cpu[:num_reqs] -= offset.to(self.optimistic_seq_lens_cpu.dtype)
        num_tokens = int(self.query_start_loc.cpu[num_reqs])
        token_rows = torch.from_numpy(self.req_indices.np[:num_tokens]).long()
        physical = self.positions[:num_tokens] - offset[token_rows].to(self.positions.dtype)
        self.input_batch.block_table.compute_slot_mapping(
            num_reqs, self.query_start_loc.gpu[: num_reqs + 1], physical
        )

    def _kvc_row_work(self, request_id: str, plan: StepPlan) -> RowWork:
        state = self.requests[request_id]
        extra_args = state.sampling_params.extra_args
        request = KVTask.from_extra_args(extra_args)
        assert request is not None, f"{request_id}: the scheduler planned eviction the worker cannot parse"
        row = self.input_batch.req_id_to_index[request_id]
        start, end = int(self.query_start_loc.cpu[row]), int(self.query_start_loc.cpu[row + 1])
        compaction, score_pass = plan.compact.get(request_id), plan.score.get(request_id)
        context = score_pass.context if score_pass else compaction.length if compaction else None
        pass_key = None
        if request.policy.needs_reconstruction and context is not None:
            pass_key = self._kvc_pass_key(state, request, context)
        return RowWork(
            request_id,
            request.policy,
            start,
            int(self.positions[start]),
            end - start,
            plan.capture.get(request_id),
            compaction,
            score_pass,
            pass_key,
        )

    def _kvc_after_attention(self, layer: int, query: torch.Tensor, kv_cache: torch.Tensor, isa: str) -> None:
        for work in self.kvc_work:
            captured = work.captured_range()
            if captured is not None:
                lo, hi = captured
                chunk = query[
                    work.query_start + lo - work.first_position : work.query_start + hi - work.first_position
                ]
                self.kvc_queries.setdefault(work.request_id, {}).setdefault(layer, []).append(chunk.clone())
            if work.compaction is not None:
                self.kvc_caches[layer] = (kv_cache, isa)
                self._kvc_score_layer(work, layer, kv_cache, isa, query.shape[1])
            if work.score_pass is not None:
                self._kvc_score_pass(work, layer, kv_cache, isa)

    def _kvc_captured(self, request_id: str, layer: int) -> torch.Tensor | None:
        """The request's kept queries of `layer`, [q_heads, tokens, head_dim]."""
        captured = self.kvc_queries.get(request_id, {}).get(layer)
        return torch.cat(captured).transpose(0, 1) if captured else None

    def _kvc_score_layer(
        self, work: RowWork, layer: int, kv_cache: torch.Tensor, isa: str, query_heads: int
    ) -> None:
        """Score this layer's K/V of the compacted span with the request's policy (compaction waits until
        every layer is scored); a policy scored by reconstruction passes takes the passes' scores."""
        compaction = work.compaction
        assert compaction is not None
        if work.pass_key is not None:
            scores = self.kvc_pass_scores.get(work.pass_key)
            if scores is not None and layer in scores:
                self.kvc_scores.setdefault(work.request_id, {})[layer] = scores[layer]
                return
        keys, values = read_kv(kv_cache, self.requests[work.request_id].block_ids[0], compaction.length, isa)
        queries = self._kvc_captured(work.request_id, layer)
        if queries is None:
            queries = keys.new_zeros(query_heads, 0, keys.shape[-1])
        view = LayerView(*self._kvc_every_rank(keys, values, queries), self.kvc_rotary)
        self.kvc_scores.setdefault(work.request_id, {})[layer] = self._kvc_own_scores(work.policy, view)

    @staticmethod
    def _kvc_pass_key(state: Any, task: KVTask, context: int) -> PassKey:
        """Whose reconstruction scores these are: adapter, policy with options, the context's tokens."""
        lora = state.lora_request.lora_int_id if state.lora_request else 0
        return tuple(CacheKey.of(task.spec, state.prompt_token_ids[:context], lora).scores_key())

    def _kvc_score_pass(self, work: RowWork, layer: int, kv_cache: torch.Tensor, isa: str) -> None:
        """Add this layer's scores of a reconstruction pass's span to its context's pass scores (the most
        any pass gave each token)."""
        score_pass, key = work.score_pass, work.pass_key
        assert score_pass is not None and key is not None
        state = self.requests[work.request_id]
        keys, _ = read_kv(kv_cache, state.block_ids[0], state.num_prompt_tokens, isa)
        queries = self._kvc_captured(work.request_id, layer)
        assert queries is not None, f"{work.request_id}: no repeat queries captured"
        keys, queries = self._kvc_every_rank(keys, queries)
        view = ReconstructionView(keys, queries, score_pass.span, score_pass.context)
        span_scores = work.policy.pass_scores(view)  # type: ignore[attr-defined]
        if key not in self.kvc_pass_scores:
            self.kvc_pass_scores[key] = {}
            while len(self.kvc_pass_scores) > PASS_SCORES_KEPT:
                self.kvc_pass_scores.popitem(last=False)
        self.kvc_pass_scores.move_to_end(key)
        layers = self.kvc_pass_scores[key]
        if layer not in layers:
            layers[layer] = torch.zeros(keys.shape[0], score_pass.context)
        start, end = score_pass.span
        layers[layer][:, start:end] = torch.maximum(layers[layer][:, start:end], span_scores)

    def _kvc_compact(self, work: RowWork) -> None:
        """Let every layer's scores settle the keep sets (`Policy.across_layers`), then write each layer's
        kept tokens into the destination's first slots (fresh blocks, or the request's own)."""
        compaction = work.compaction
        assert compaction is not None
        own = self.kvc_scores.pop(work.request_id)
        layers = sorted(own)
        final = self._kvc_final_scores(work.policy, [own[layer] for layer in layers])
        block_ids = self.requests[work.request_id].block_ids[0]
        destination = list(compaction.into) if compaction.into is not None else block_ids
        must_keep = work.policy.must_keep(compaction.length)
        kept = []
        for layer, scores in zip(layers, final, strict=True):
            kv_cache, isa = self.kvc_caches[layer]
            keys, values = read_kv(kv_cache, block_ids, compaction.length, isa)
            keep = keep_indices(self._kvc_this_rank(scores), compaction.keep, must_keep)
            compact_kv(kv_cache, destination, keys, values, keep, isa)
            kept.append(keep)
        if self.kvc_tp.world_size == 1 and kept:
            caches = sum(keep.shape[0] for keep in kept)
            control.report_retention(
                work.request_id, retention.encode(retention.kept_counts(kept, compaction.length), caches)
            )

    def _kvc_every_rank(self, *per_head: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """`[heads, ...]` tensors of this rank's heads, as every tensor-parallel rank's heads in order."""
        ranks = self.kvc_tp.world_size
        if ranks == 1:
            return per_head
        return tuple(
            self.kvc_tp.all_gather(tensor.contiguous(), dim=0)
            if tensor.numel()  # vLLM's CPU all-gather dies on empty tensors (no queries: knorm, say)
            else tensor.new_zeros(tensor.shape[0] * ranks, *tensor.shape[1:])
            for tensor in per_head
        )

    def _kvc_this_rank(self, scores: torch.Tensor) -> torch.Tensor:
        """This rank's KV heads' rows of `[all kv heads, n]` scores."""
        heads = scores.shape[0] // self.kvc_tp.world_size
        return scores[self.kvc_tp.rank_in_group * heads : (self.kvc_tp.rank_in_group + 1) * heads]

    @staticmethod
    def _kvc_own_scores(policy: Policy, view: LayerView) -> torch.Tensor:
        """The policy's scores for one layer; if it fails (a third-party policy, say), the most recent tokens
        win, so the engine keeps serving and the scheduler's block accounting stays true."""
        try:
            return policy.score(view)
        except Exception:
            log.exception(
                "KV policy %r failed to score %d tokens; keeping the most recent", policy.name, view.length
            )
            return torch.arange(view.length, dtype=torch.float32).expand(view.kv_heads, -1)

    @staticmethod
    def _kvc_final_scores(policy: Policy, own: list[torch.Tensor]) -> list[torch.Tensor]:
        """The policy's cross-layer scores; if that fails, each layer keeps by its own."""
        try:
            final = policy.across_layers(own)
            if len(final) != len(own):
                raise ValueError(f"across_layers returned {len(final)} layers' scores for {len(own)}")
            return final
        except Exception:
            log.exception("KV policy %r failed across layers; each layer keeps by its own", policy.name)
            return own

    def execute_model(self, scheduler_output: Any, *args: Any, **kwargs: Any) -> Any:
        result = super().execute_model(scheduler_output, *args, **kwargs)
        for work in self.kvc_work:
            if work.compaction is not None:
                self._kvc_compact(work)
                self._kvc_swap_blocks(work.request_id, work.compaction)
            if work.score_pass is not None:
                self.kvc_queries.pop(work.request_id, None)
        self.kvc_work = []
        return result

    def _kvc_swap_blocks(self, request_id: str, compaction: Compaction) -> None:
        """Mirror the scheduler: the request now holds the kept blocks, then any past the compacted span."""
        state = self.requests[request_id]
        (block_ids,) = state.block_ids
        block_ids[:] = compaction.block_ids_after(block_ids, self.cache_config.block_size)
        row = self.input_batch.req_id_to_index[request_id]
        self.input_batch.block_table.clear_row(row)
        self.input_batch.block_table.add_row(state.block_ids, row)
        self.kvc_offsets[request_id] = compaction.length - compaction.keep
        self.kvc_queries.pop(request_id, None)


def rotary_of_table(table: torch.Tensor) -> Rotary:
    """A `Rotary` reading vLLM's cos/sin table ([positions, dims]: the cos half, then the sin half)."""
    return Rotary(lambda positions: table[positions].chunk(2, dim=-1), table.shape[-1], len(table))


class KVCompactWorker(CPUWorker):
    """vLLM's CPU worker whose model runner is a `KVCompactRunner` (`--worker-cls`)."""

    def init_device(self) -> None:
        super().init_device()
        if type(self.model_runner) is not CPUModelRunner:
            raise RuntimeError(
                "KV eviction needs vLLM's V1 CPU model runner; set VLLM_USE_V2_MODEL_RUNNER=0 "
                f"(found {type(self.model_runner).__name__})."
            )
        self.model_runner.__class__ = KVCompactRunner
        self.model_runner.kvc_init()

    def kvc_control(self, operation: str, arguments: dict[str, Any]) -> Any:
        """Context caches, for the API server (`control.py`): handed to the scheduler in this process; a
        listing also names the contexts whose reconstruction scores this runner keeps (a build at another
        ratio needs no passes)."""
        result = control.dispatch(operation, arguments)
        if operation == "list":
            runner: KVCompactRunner = self.model_runner  # type: ignore[assignment]
            result["scored_contexts"] = [list(key) for key in runner.kvc_pass_scores]
        return result
