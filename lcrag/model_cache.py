"""The model cache: prepared models in one folder shared by every data dir (`LCRAG_MODEL_CACHE`), each a
Hugging Face model folder that `lcrag serve --model NAME` serves by its name."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from lcrag.default_model import DEFAULT_MODEL_NAME, TEMP_PREFIX


@dataclass(frozen=True)
class CachedModel:
    name: str
    path: Path
    architecture: str  # the config's model_type (llama, qwen2, ...)
    dtype: str  # as stored
    context: int | None  # max_position_embeddings
    size_bytes: int

    @property
    def is_default(self) -> bool:
        return self.name == DEFAULT_MODEL_NAME


def cached_models(folder: Path) -> list[CachedModel]:
    """Every complete model folder (one with a config.json) in `folder`, by name; conversions in progress
    and unreadable configs are left out."""
    if not folder.is_dir():
        return []
    models = []
    for path in sorted(folder.iterdir()):
        config_path = path / "config.json"
        if path.name.startswith(TEMP_PREFIX) or not config_path.is_file():
            continue
        try:
            config = json.loads(config_path.read_text())
        except (OSError, ValueError):
            continue
        size = sum(file.stat().st_size for file in path.rglob("*") if file.is_file())
        dtype = str(config.get("dtype") or config.get("torch_dtype") or "?")
        context = config.get("max_position_embeddings")
        models.append(CachedModel(path.name, path, str(config.get("model_type", "?")), dtype, context, size))
    return models


def models_table(models: list[CachedModel]) -> str:
    """A plain-text table: name (the default marked), architecture, stored dtype, context, size, folder."""
    rows = [("NAME", "ARCHITECTURE", "DTYPE", "CONTEXT", "SIZE", "FOLDER")]
    for model in models:
        name = f"{model.name} (default)" if model.is_default else model.name
        context = str(model.context) if model.context else "?"
        size = f"{model.size_bytes / 2**20:.0f} MiB"
        rows.append((name, model.architecture, model.dtype, context, size, str(model.path)))
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]) - 1)]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row[:-1], widths, strict=True)) + "  " + row[-1]
        for row in rows
    )
