"""What the benchmarks that talk to a running server share: their common flags and a fresh collection."""

from __future__ import annotations

import argparse

import httpx


def server_parser(doc: str | None) -> argparse.ArgumentParser:
    """An argument parser with `--base-url` and `--api-key` (the module docstring as its help)."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base-url", default="http://127.0.0.1:8000")
    parser.add_argument("--api-key", default=None)
    return parser


def server_client(args: argparse.Namespace) -> httpx.Client:
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    return httpx.Client(base_url=args.base_url, headers=headers, timeout=600)


def fresh_collection(http: httpx.Client, name: str, files: list[tuple[str, str]]) -> None:
    """Create `name` anew (deleting any old one) holding `files`: (file name, text) pairs."""
    http.delete(f"/v1/collections/{name}")
    http.post("/v1/collections", json={"name": name}).raise_for_status()
    upload = [("files", (file_name, text.encode(), "text/plain")) for file_name, text in files]
    http.post(f"/v1/collections/{name}/documents", files=upload).raise_for_status()
