"""Retrieval over document collections: loaders, token-sized chunking, offline embeddings, a Chroma store,
retrieval with citations, and long-context (LC) assembly of a whole collection. Never imports `server`."""
