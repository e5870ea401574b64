"""vLLM's CPU worker and model runner with KV eviction (`--worker-cls`): the device methods of
`..runner.KVRunner` on the CPU, where every "device" buffer of the runner is its CPU buffer.

vLLM 0.32 pieces extended (v1/worker/cpu_worker.py, cpu_model_runner.py, gpu_model_runner.py):
- `CPUWorker.init_device` builds the V1 `CPUModelRunner` (with `VLLM_USE_V2_MODEL_RUNNER=0`); we adopt
  that instance as `KVCompactRunner` (a subclass adding methods only);
- `GPUModelRunner._prepare_inputs`, as `CPUModelRunner` runs it (`_postprocess_tensors` makes each
  `CpuGpuBuffer.gpu` its `.cpu`): after it, `seq_lens`, `optimistic_seq_lens_cpu` and the block tables' slot
  mapping (`BlockTable.compute_slot_mapping` from `positions`, `req_indices`, `query_start_loc`) are made
  physical for offset requests;
- the attention layers' cache layout (`layer.isa`, set by `CPUAttentionMetadataBuilder`), read and written
  by `cache_layout.py`.
"""

from __future__ import annotations

from typing import Any, cast

import torch
from vllm.v1.worker.cpu_model_runner import CPUModelRunner
from vllm.v1.worker.cpu_worker import CPUWorker

from compression.vllm_integration.cpu.cache_layout import READABLE_ISAS, compact_kv, read_kv
from compression.vllm_integration.runner import KVRunner
from compression.vllm_integration.version import check_readable_cache


class KVCompactRunner(KVRunner, CPUModelRunner):
    """vLLM's CPU model runner plus per-request eviction (state added by `kvc_init`)."""

    def _kvc_layout(self, layer: Any) -> str:
        return layer.isa

    def _kvc_check_layouts(self, layers: dict[str, Any]) -> None:
        check_readable_cache(
            {name: getattr(layer, "isa", None) for name, layer in layers.items()}, READABLE_ISAS
        )

    _kvc_read = staticmethod(read_kv)
    _kvc_write_kept = staticmethod(compact_kv)

    def _kvc_apply_offsets(self, offsets: dict[str, int]) -> None:
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
        cast(KVCompactRunner, self.model_runner).kvc_init()  # its class is now ours
