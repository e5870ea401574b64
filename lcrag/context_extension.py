"""Serving a model past its trained window with YaRN RoPE scaling (Peng et al., 2023, "YaRN: Efficient
Context Window Extension of Large Language Models"): `--context-extension yarn:FACTOR` rewrites the model's
RoPE parameters through vLLM's `--hf-overrides` (nothing is written to the model folder), so positions up
to FACTOR x the trained window are interpolated rather than extrapolated."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lcrag.default_model import TEMP_PREFIX

SPEC = re.compile(r"^yarn:(?P<factor>\d+(\.\d+)?)$")


class ContextExtensionError(ValueError):
    """A `--context-extension` value lcrag cannot apply; the message says what to pass."""


@dataclass(frozen=True)
class ContextExtension:
    factor: float

    @classmethod
    def parse(cls, spec: str) -> ContextExtension:
        match = SPEC.match(spec.strip())
        if match is None or not 1.0 < float(match["factor"]) <= 16.0:
            raise ContextExtensionError(
                f"--context-extension {spec!r}: expected yarn:FACTOR with 1 < FACTOR <= 16, e.g. yarn:2"
            )
        return cls(float(match["factor"]))

    def overrides(self, config: dict[str, Any]) -> dict[str, Any]:
        """The `--hf-overrides` for a model whose config.json is `config`: YaRN over its own RoPE base and
        window, and the window raised by the factor."""
        rope = dict(config.get("rope_parameters") or config.get("rope_scaling") or {})
        if rope.get("rope_type", "default") not in ("default", "linear"):
            raise ContextExtensionError(
                f"--context-extension: the model already scales RoPE ({rope['rope_type']}); "
                "serve it at its own window"
            )
        window = int(config["max_position_embeddings"])
        theta = rope.get("rope_theta", config.get("rope_theta", 10000.0))
        return {
            "rope_parameters": {
                "rope_type": "yarn",
                "rope_theta": theta,
                "factor": self.factor,
                "original_max_position_embeddings": window,
            },
            "max_position_embeddings": self.window(config),
        }

    def window(self, config: dict[str, Any]) -> int:
        return int(int(config["max_position_embeddings"]) * self.factor)


def engine_settings(spec: str, model_dir: Path) -> dict[str, Any]:
    """vLLM engine arguments serving `model_dir` extended by `spec`: `hf_overrides` and the longer
    `max_model_len`."""
    extension = ContextExtension.parse(spec)
    config = json.loads((model_dir / "config.json").read_text())
    return {"hf_overrides": extension.overrides(config), "max_model_len": extension.window(config)}


def extension_args(spec: str, model_dir: Path, max_model_len: int | None = None) -> list[str]:
    """`engine_settings` as `lcrag serve` passes them to vLLM, keeping a context length that was asked for."""
    settings = engine_settings(spec, model_dir)
    flags = ["--hf-overrides", json.dumps(settings["hf_overrides"])]
    return flags if max_model_len else [*flags, "--max-model-len", str(settings["max_model_len"])]


def prepare_extended_model(base: Path, context: int) -> Path:
    """A copy of the model folder `base` next to it, named `<base>-<context // 1024>k`, whose config serves
    `context` tokens with YaRN (weights and tokenizer hard-linked, so it costs no disk); a no-op when there.
    Written into a temporary folder and renamed, so an interrupted run leaves nothing that loads."""
    import os
    import shutil
    import tempfile

    config = json.loads((base / "config.json").read_text())
    window = int(config["max_position_embeddings"])
    if context <= window or context % window:
        raise ContextExtensionError(
            f"--context {context}: {base.name} is trained for {window} tokens; pass a multiple of it, "
            f"e.g. {2 * window} or {4 * window}"
        )
    target = base.with_name(f"{base.name}-{context // 1024}k")
    if (target / "config.json").is_file():
        return target
    partial = Path(tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}{target.name}-", dir=base.parent))
    try:
        for file in base.iterdir():
            if file.is_file() and file.name != "config.json":
                try:
                    os.link(file, partial / file.name)
                except OSError:  # another file system: copy
                    shutil.copy2(file, partial / file.name)
        extended = {**config, **ContextExtension(context / window).overrides(config)}
        (partial / "config.json").write_text(json.dumps(extended, indent=2))
        partial.rename(target)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return target
