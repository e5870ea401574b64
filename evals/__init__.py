"""Quality evaluations against the server's HTTP API (needle in a haystack, position probing, compression
sweeps), written as JSON, Markdown tables and PNG plots. Built with the features they measure."""
