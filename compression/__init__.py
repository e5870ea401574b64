"""KV-cache eviction inside vLLM's paged attention: policies, per-layer budgets, a pure-torch reference
and the vLLM integration. Built by the KV-eviction issue; nothing here yet."""
