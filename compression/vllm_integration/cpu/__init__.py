"""The CPU part of KV eviction: vLLM's CPU cache layouts (`cache_layout.py`) and the CPU worker and model
runner (`runner.py`) that give the device-independent runner (`..runner.KVRunner`) its device methods."""
