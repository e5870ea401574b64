"""Trained adapters on disk (`<data dir>/adapters/<name>`) and in a running server (vLLM's runtime LoRA
loading: POST /v1/load_lora_adapter and /v1/unload_lora_adapter, enabled by `lcrag serve --enable-lora`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from finetune.train import read_card
from lcrag.client import failure_of


class AdapterError(ValueError):
    """An adapter cannot be listed, loaded or unloaded; the message says why and what to do."""


@dataclass(frozen=True)
class LocalAdapter:
    name: str
    path: Path
    card: dict[str, Any]


def local_adapters(adapters_dir: Path) -> list[LocalAdapter]:
    if not adapters_dir.is_dir():
        return []
    return [
        LocalAdapter(path.name, path, read_card(path))
        for path in sorted(adapters_dir.iterdir())
        if (path / "adapter_config.json").is_file()
    ]


def served_models(client: httpx.Client) -> list[dict[str, Any]]:
    response = client.get("/v1/models")
    _raise_for_error(response)
    return response.json()["data"]


def load(client: httpx.Client, adapters_dir: Path, name: str) -> None:
    """Load adapter `name` into the server, after checking it was trained on the model the server runs."""
    path = adapters_dir / name
    if not (path / "adapter_config.json").is_file():
        known = ", ".join(a.name for a in local_adapters(adapters_dir)) or "none"
        raise AdapterError(f"No adapter {name!r} in {adapters_dir} (adapters there: {known}).")
    base = served_models(client)[0]
    trained_on = read_card(path).get("base_model")
    if trained_on and Path(trained_on).resolve() != Path(base.get("root") or base["id"]).resolve():
        raise AdapterError(
            f"Adapter {name!r} was trained on {trained_on}, but the server runs {base.get('root')}; "
            "load it into a server of that model, or train it again on this one."
        )
    _raise_for_error(client.post("/v1/load_lora_adapter", json={"lora_name": name, "lora_path": str(path)}))


def unload(client: httpx.Client, name: str) -> None:
    _raise_for_error(client.post("/v1/unload_lora_adapter", json={"lora_name": name}))


def _raise_for_error(response: httpx.Response) -> None:
    if response.status_code == 404 and "lora_adapter" in str(response.url):
        raise AdapterError(
            "The server does not load adapters at run time: start it with `lcrag serve --enable-lora`."
        )
    if response.status_code >= 400:
        raise AdapterError(f"The server refused ({response.status_code}): {failure_of(response).message}")
