"""The model-runner half of KV eviction, independent of the device: it keeps the queries a request's policy
scores with while they are computed, scores each layer's K/V of the compressed span right after that
layer's attention in the step that completes it, and compacts every layer once the forward pass is done
(so a policy can let the layers vote on one keep set), into fresh blocks or in place, as the scheduler
planned; it scores reconstruction passes into per-context scores kept for a later cache build; and it has
compacted or adopting requests' logical positions (RoPE) mapped to physical cache slots and sequence
lengths. What each compaction kept per position goes back to the scheduler on the `ModelRunnerOutput`.

Everything per request comes from the scheduler each step, `SchedulerOutput.lcrag_kv` (a `StepPlan`); the
runner keeps device data only: captured queries, the current compaction's per-layer scores and the
reconstruction scores of the contexts the scheduler keeps.

`KVRunner` is a mixin for a subclass of vLLM's `GPUModelRunner` (the CPU one: `cpu/runner.py`), which
supplies the device methods: where a layer's cache layout is (`_kvc_layout`, `_kvc_check_layouts`), reading
a request's K/V (`_kvc_read`), writing kept K/V (`_kvc_write_kept`) and the physical slots and lengths of
offset requests (`_kvc_apply_offsets`).

vLLM 0.32 pieces extended (v1/worker/gpu_model_runner.py): `GPUModelRunner.load_model`,
`initialize_kv_cache`, `_update_states`, `_prepare_inputs` (reads `query_start_loc`,
`input_batch.num_computed_tokens_cpu`), `execute_model`, `sample_tokens` (the `ModelRunnerOutput` gets the
`RETAINED` attribute), `requests[req_id].block_ids`, `input_batch.block_table` (`clear_row`, `add_row`);
each attention layer's `impl.forward(layer, query, key, value, kv_cache, attn_metadata, output, ...)`
(layers in `compilation_config.static_forward_context`), wrapped to run after the original; under tensor
parallelism `vllm.distributed.get_tp_group()` (`all_gather`, `rank_in_group`, `world_size`): each rank holds
a contiguous slice of the query and KV heads, so policies score with every rank's heads gathered (several
pool over heads) and each rank keeps its own slice of the scores.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from compression import retention
from compression.policies import LayerView, Policy, keep_indices
from compression.policies.base import Rotary
from compression.policies.reconstruction import ReconstructionView
from compression.vllm_integration.plan import (
    RETAINED,
    Compaction,
    RequestStep,
    ScorePass,
    ScoresKey,
    StepPlan,
)
from compression.vllm_integration.version import UnsupportedEngineError, check_kv_heads_split

if TYPE_CHECKING:
    from vllm.v1.worker.gpu_model_runner import GPUModelRunner

    _RunnerBase = GPUModelRunner  # what the mixin extends, for the type checker only
else:
    _RunnerBase = object

log = logging.getLogger("lcrag.kv")


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
    scores_key: ScoresKey | None  # the context's reconstruction scores, for policies scored by passes

    def captured_range(self) -> tuple[int, int] | None:
        """This step's positions within `capture`."""
        if self.capture is None:
            return None
        lo = max(self.capture[0], self.first_position)
        hi = min(self.capture[1], self.first_position + self.num_tokens)
        return (lo, hi) if lo < hi else None


class KVRunner(_RunnerBase):
    """Mixin of a vLLM model runner adding per-request eviction (state added by `kvc_init`)."""

    kvc_queries: dict[str, dict[int, list[torch.Tensor]]]  # request -> layer -> [tokens, q_heads, head_dim]
    kvc_work: list[RowWork]  # this step's
    kvc_forget: list[ScoresKey]  # this step's plan's `forget_scores`
    kvc_scores: dict[str, dict[int, torch.Tensor]]  # request -> layer -> its own scores, this step only
    kvc_caches: dict[int, tuple[torch.Tensor, str]]  # layer -> (KV cache, layout)
    kvc_pass_scores: dict[ScoresKey, dict[int, torch.Tensor]]  # -> layer -> [kv_heads, context]
    kvc_retained: dict[str, str]  # request -> what its compaction kept, until the step's output carries it
    kvc_rotary: Rotary | None
    kvc_tp: Any  # vLLM's tensor-parallel group coordinator

    def kvc_init(self) -> None:
        from vllm.distributed import get_tp_group

        self.kvc_queries = {}
        self.kvc_work = []
        self.kvc_forget = []
        self.kvc_scores = {}
        self.kvc_caches = {}
        self.kvc_pass_scores = {}
        self.kvc_retained = {}
        self.kvc_rotary = None
        self.kvc_tp = get_tp_group()

    # the device's part (`cpu/runner.py`)

    def _kvc_layout(self, layer: Any) -> str:
        """The cache layout of an attention layer, as `_kvc_read` and `_kvc_write_kept` take it."""
        raise NotImplementedError

    def _kvc_check_layouts(self, layers: dict[str, Any]) -> None:
        """Refuse (`UnsupportedEngineError`) cache layouts the device methods cannot read."""
        raise NotImplementedError

    def _kvc_read(
        self, kv_cache: torch.Tensor, block_ids: Sequence[int], length: int, layout: str
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Copies of a request's first `length` keys and values, each `[kv_heads, length, head_size]`."""
        raise NotImplementedError

    def _kvc_write_kept(
        self,
        kv_cache: torch.Tensor,
        block_ids: Sequence[int],
        keys: torch.Tensor,
        values: torch.Tensor,
        keep: torch.Tensor,
        layout: str,
    ) -> None:
        """Write each KV head's kept tokens (`keep`: `[kv_heads, kept]` positions into `keys`/`values` as
        `_kvc_read` returned them) into the first slots of `block_ids`, in order."""
        raise NotImplementedError

    def _kvc_apply_offsets(self, offsets: dict[str, int]) -> None:
        """After vLLM's `_prepare_inputs`: offset requests' sequence lengths and cache slots become physical
        (logical minus their offset); positions stay logical."""
        raise NotImplementedError

    # vLLM's methods, extended

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

    def initialize_kv_cache(self, *args: Any, **kwargs: Any) -> None:
        super().initialize_kv_cache(*args, **kwargs)
        self._kvc_check_layouts(self._kvc_attention_layers())

    def _update_states(self, scheduler_output: Any) -> Any:
        cached = scheduler_output.scheduled_cached_reqs
        for request_id in (
            *scheduler_output.finished_req_ids,
            *(scheduler_output.preempted_req_ids or ()),
            *cached.resumed_req_ids,
        ):
            self.kvc_queries.pop(request_id, None)
        return super()._update_states(scheduler_output)

    def _prepare_inputs(self, scheduler_output: Any, num_scheduled_tokens: Any) -> Any:
        result = super()._prepare_inputs(scheduler_output, num_scheduled_tokens)
        plan: StepPlan | None = getattr(scheduler_output, "lcrag_kv", None)
        if plan is None:
            return result
        offsets = plan.offsets()
        if offsets:
            self._kvc_apply_offsets(offsets)
        self.kvc_work = [self._kvc_row_work(request_id, step) for request_id, step in plan.work().items()]
        self.kvc_forget = plan.forget_scores
        return result

    def execute_model(self, scheduler_output: Any, *args: Any, **kwargs: Any) -> Any:
        result = super().execute_model(scheduler_output, *args, **kwargs)
        for work in self.kvc_work:
            if work.compaction is not None:
                self._kvc_compact(work)
                self._kvc_swap_blocks(work.request_id, work.compaction)
            if work.score_pass is not None:
                self.kvc_queries.pop(work.request_id, None)
        for key in self.kvc_forget:
            self.kvc_pass_scores.pop(key, None)
        self.kvc_work, self.kvc_forget = [], []
        return self._kvc_with_retention(result)

    # vLLM decorates GPUModelRunner.sample_tokens with a bare `@torch.inference_mode`, which torch's types
    # make an `inference_mode` object rather than a method, so no method override matches it
    def sample_tokens(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        return self._kvc_with_retention(super().sample_tokens(*args, **kwargs))

    # what the runner adds

    def _kvc_with_retention(self, output: Any) -> Any:
        """The step's `ModelRunnerOutput` (the scheduler reads it in `update_from_output`), carrying what the
        compactions kept, once it exists (`sample_tokens` makes it after `execute_model`)."""
        from vllm.v1.outputs import EMPTY_MODEL_RUNNER_OUTPUT, ModelRunnerOutput

        made = isinstance(output, ModelRunnerOutput) and output is not EMPTY_MODEL_RUNNER_OUTPUT
        if self.kvc_retained and made:
            setattr(output, RETAINED, self.kvc_retained)
            self.kvc_retained = {}
        return output

    def _kvc_find_rotary(self) -> Rotary | None:
        """The model's RoPE table (vLLM's `RotaryEmbedding.cos_sin_cache`: cos then sin per position), for
        policies that reason about positions; None if it has none in the rotate-half convention."""
        for module in self.model.modules():
            table = getattr(module, "cos_sin_cache", None)
            if isinstance(table, torch.Tensor) and getattr(module, "is_neox_style", False):
                return rotary_of_table(table.float().cpu())
        return None

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
                self._kvc_after_attention(layer_index, query, kv_cache, self._kvc_layout(layer))
            return result

        return forward_then_evict

    def _kvc_row_work(self, request_id: str, step: RequestStep) -> RowWork:
        assert step.policy is not None
        row = self.input_batch.req_id_to_index[request_id]
        start, end = int(self.query_start_loc.cpu[row]), int(self.query_start_loc.cpu[row + 1])
        return RowWork(
            request_id,
            step.policy,
            start,
            int(self.input_batch.num_computed_tokens_cpu[row]),
            end - start,
            step.capture,
            step.compaction,
            step.score_pass,
            step.scores_key,
        )

    def _kvc_after_attention(
        self, layer: int, query: torch.Tensor, kv_cache: torch.Tensor, layout: str
    ) -> None:
        for work in self.kvc_work:
            captured = work.captured_range()
            if captured is not None:
                lo, hi = captured
                chunk = query[
                    work.query_start + lo - work.first_position : work.query_start + hi - work.first_position
                ]
                self.kvc_queries.setdefault(work.request_id, {}).setdefault(layer, []).append(chunk.clone())
            if work.compaction is not None:
                self.kvc_caches[layer] = (kv_cache, layout)
                self._kvc_score_layer(work, layer, kv_cache, layout, query.shape[1])
            if work.score_pass is not None:
                self._kvc_score_pass(work, layer, kv_cache, layout)

    def _kvc_captured(self, request_id: str, layer: int) -> torch.Tensor | None:
        """The request's kept queries of `layer`, [q_heads, tokens, head_dim]."""
        captured = self.kvc_queries.get(request_id, {}).get(layer)
        return torch.cat(captured).transpose(0, 1) if captured else None

    def _kvc_score_layer(
        self, work: RowWork, layer: int, kv_cache: torch.Tensor, layout: str, query_heads: int
    ) -> None:
        """Score this layer's K/V of the compacted span with the request's policy (compaction waits until
        every layer is scored); a policy scored by reconstruction passes takes the passes' scores."""
        compaction = work.compaction
        assert compaction is not None
        if work.scores_key is not None:
            scores = self.kvc_pass_scores.get(work.scores_key)
            if scores is not None and layer in scores:
                self.kvc_scores.setdefault(work.request_id, {})[layer] = scores[layer]
                return
        block_ids = self.requests[work.request_id].block_ids[0]
        keys, values = self._kvc_read(kv_cache, block_ids, compaction.length, layout)
        queries = self._kvc_captured(work.request_id, layer)
        if queries is None:
            queries = keys.new_zeros(query_heads, 0, keys.shape[-1])
        keys, values, queries = self._kvc_every_rank(keys, values, queries)
        view = LayerView(keys, values, queries, self.kvc_rotary)
        self.kvc_scores.setdefault(work.request_id, {})[layer] = self._kvc_own_scores(work.policy, view)

    def _kvc_score_pass(self, work: RowWork, layer: int, kv_cache: torch.Tensor, layout: str) -> None:
        """Add this layer's scores of a reconstruction pass's span to its context's pass scores (the most
        any pass gave each token)."""
        score_pass, key = work.score_pass, work.scores_key
        assert score_pass is not None and key is not None
        state = self.requests[work.request_id]
        keys, _ = self._kvc_read(kv_cache, state.block_ids[0], state.num_prompt_tokens, layout)
        queries = self._kvc_captured(work.request_id, layer)
        assert queries is not None, f"{work.request_id}: no repeat queries captured"
        keys, queries = self._kvc_every_rank(keys, queries)
        view = ReconstructionView(keys, queries, score_pass.span, score_pass.context)
        span_scores = work.policy.pass_scores(view)  # type: ignore[attr-defined]
        layers = self.kvc_pass_scores.setdefault(key, {})
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
            kv_cache, layout = self.kvc_caches[layer]
            keys, values = self._kvc_read(kv_cache, block_ids, compaction.length, layout)
            keep = keep_indices(self._kvc_this_rank(scores), compaction.keep, must_keep)
            self._kvc_write_kept(kv_cache, destination, keys, values, keep, layout)
            kept.append(keep)
        if self.kvc_tp.world_size == 1 and kept:  # a rank's keep sets cover its own heads only
            caches = sum(keep.shape[0] for keep in kept)
            counts = retention.kept_counts(kept, compaction.length)
            self.kvc_retained[work.request_id] = retention.encode(counts, caches)

    def _kvc_swap_blocks(self, request_id: str, compaction: Compaction) -> None:
        """As the scheduler does: the request now holds the kept blocks, then any past the compacted span."""
        state = self.requests[request_id]
        (block_ids,) = state.block_ids
        block_ids[:] = compaction.block_ids_after(block_ids, self.cache_config.block_size)
        row = self.input_batch.req_id_to_index[request_id]
        self.input_batch.block_table.clear_row(row)
        self.input_batch.block_table.add_row(state.block_ids, row)
        self.kvc_queries.pop(request_id, None)

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


def rotary_of_table(table: torch.Tensor) -> Rotary:
    """A `Rotary` reading vLLM's cos/sin table ([positions, dims]: the cos half, then the sin half)."""

    def cos_sin(positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        cos, sin = table[positions].chunk(2, dim=-1)
        return cos, sin

    return Rotary(cos_sin, table.shape[-1], len(table))
