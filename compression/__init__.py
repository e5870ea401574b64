"""KV-cache eviction: policies (one small scorer per file in `policies/`), a registry with the entry-point
group `lcrag.kv_policies`, and per-layer budgets. The vLLM integration (scoring and compacting inside
paged attention, freeing blocks) comes next, in `vllm_integration/`."""
