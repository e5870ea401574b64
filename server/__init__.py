"""The lcrag server: vLLM's OpenAI-compatible app in this process, extended with lcrag's middleware
and routers."""
