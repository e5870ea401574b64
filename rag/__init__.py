"""Retrieval over document collections: loaders, chunking, embeddings, Chroma store, retrieval, citations and
long-context assembly. Built by the RAG issue; nothing here yet."""
