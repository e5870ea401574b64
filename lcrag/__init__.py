"""lcrag: question answering over document collections with RAG or long context on one vLLM server."""

__version__ = "0.1.0"
