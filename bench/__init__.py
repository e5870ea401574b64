"""Speed benchmarks that print ratios against a baseline measured in the same run (serving, KV capacity,
ingest, retrieval). Built with the features they measure."""
