"""The chat pipeline: a request parsed once, planned (modes/), handed to vLLM, its reply's lcrag fields."""
