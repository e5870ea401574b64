"""Server settings: defaults < environment (`LCRAG_*`) < command-line flags.

Every setting is a field of `Settings`; the CLI passes only the flags a user gave, so unset flags fall
back to the environment and then to the defaults here. A bad value raises `SettingsError` with one line
per bad setting, naming both its environment variable and its flag.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "LCRAG_"


class SettingsError(ValueError):
    """One or more settings have values lcrag cannot use; the message names each."""


class Settings(BaseSettings):
    """Everything `lcrag serve` and the other commands can be configured with."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid", validate_default=True)

    data_dir: Path = Field(
        default=Path("~/.cache/lcrag"),
        description="Where collections, adapters and caches live.",
    )
    model_cache: Path = Field(
        default=Path("~/.cache/lcrag/models"),
        description="Where prepared models live, shared by every data dir (`lcrag model list`).",
    )
    model: str | None = Field(
        default=None,
        description="Model to serve: a local HF model directory, the name of one in the model cache, or a "
        "hub id where a hub is reachable; empty means the bundled SmolLM2-135M-Instruct.",
    )
    served_model_name: str | None = Field(
        default=None, description="Model name clients use; defaults to the model directory's name."
    )
    host: str = Field(default="127.0.0.1", min_length=1, description="Address to listen on.")
    port: int = Field(default=8000, ge=1, le=65535, description="TCP port to listen on.")
    api_key: SecretStr | None = Field(
        default=None, description="If set, every route except /health needs 'Authorization: Bearer <key>'."
    )
    api_key_file: Path | None = Field(
        default=None,
        description="A file holding the API key (keeps it out of the process list and shell history).",
    )
    max_model_len: int | None = Field(
        default=None, ge=16, description="Context length in tokens; defaults to the model's own."
    )
    kv_cache_gb: int | None = Field(
        default=None, ge=1, le=1024, description="KV-cache memory in whole GiB; 4 on CPU if unset."
    )
    enable_lora: bool = Field(
        default=False, description="Allow LoRA adapters (loaded at start or at run time)."
    )
    kv_eviction: bool = Field(
        default=True,
        description="Load the KV-eviction scheduler and worker into vLLM (CPU), so requests can choose a "
        "policy; off serves stock vLLM.",
    )
    kv_policy: str = Field(default="none", description="Eviction policy for requests that name none.")
    kv_ratio: float = Field(
        default=0.0, ge=0.0, lt=1.0, description="Fraction of prompt K/V evicted for requests that name none."
    )
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        default="auto",
        description="Model dtype; 'auto' is bfloat16 on CPUs with AMX, float32 on other CPUs and the "
        "model's own on GPU.",
    )
    context_extension: str | None = Field(
        default=None,
        pattern=r"^yarn:\d+(\.\d+)?$",
        description="Serve past the model's window with YaRN RoPE scaling: yarn:FACTOR (e.g. yarn:2).",
    )
    chroma_url: str | None = Field(
        default=None,
        pattern=r"^https?://[^/\s]+/?$",
        description="A `chroma run` server (http://host:port); empty means embedded Chroma in the data dir.",
    )
    embedder: Path | None = Field(
        default=None, description="Local sentence-transformers model folder; empty means the bundled MiniLM."
    )
    reranker: Path | None = Field(
        default=None, description="Local sentence-transformers CrossEncoder folder: rerank rag mode's chunks."
    )
    max_upload_mb: int = Field(default=50, ge=1, le=4096, description="Largest accepted upload file, in MB.")
    max_request_mb: int = Field(
        default=200, ge=1, le=16384, description="Largest request body (all of an upload's files), in MB."
    )
    retrieval: Literal["dense", "bm25", "hybrid"] = Field(
        default="dense", description="How rag mode retrieves when a request does not say."
    )
    retrieval_order: Literal["score", "document"] = Field(
        default="score", description="The order of rag mode's chunks when a request does not say."
    )
    answer_tokens: int = Field(
        default=512, ge=1, description="Tokens kept free for the answer when a request sets no max_tokens."
    )
    auto_min_score: float = Field(
        default=0.3,
        ge=-1.0,
        le=1.0,
        description="auto mode answers with lc when the best retrieval score is below this (cosine).",
    )
    auto_probe_tokens: int = Field(
        default=24, ge=1, le=512, description="Answer tokens of auto mode's RAG attempt (Self-Route)."
    )
    ui: bool = Field(default=True, description="Serve the side-by-side web UI at /ui.")
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        default="info", description="lcrag's own log level (vLLM logs warnings and errors only)."
    )

    @field_validator("kv_policy")
    @classmethod
    def _known_policy(cls, value: str) -> str:
        from compression.registry import PolicyError, create

        try:
            create(value)
        except PolicyError as error:
            raise ValueError(str(error)) from None
        return value

    @field_validator("data_dir", "model_cache")
    @classmethod
    def _expand_user(cls, value: Path) -> Path:
        return value.expanduser()

    @field_validator("api_key_file")
    @classmethod
    def _readable_key_file(cls, value: Path | None) -> Path | None:
        if value is None:
            return None
        path = value.expanduser()
        if not path.is_file():
            raise ValueError(f"no such file: {path}")
        if not path.read_text().strip():
            raise ValueError(f"{path} is empty; write the key into it")
        return path

    @model_validator(mode="after")
    def _key_from_file(self) -> Settings:
        if self.api_key_file is not None:
            if self.api_key is not None:
                raise ValueError(
                    "give the API key once: --api-key (LCRAG_API_KEY) or --api-key-file, not both"
                )
            self.api_key = SecretStr(self.api_key_file.read_text().strip())
        return self

    @field_validator(
        "model", "served_model_name", "api_key", "chroma_url", "embedder", "reranker", mode="before"
    )
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        return None if value == "" else value

    @field_validator("embedder", "reranker")
    @classmethod
    def _a_model_folder(cls, value: Path | None) -> Path | None:
        if value is not None and not (value.expanduser() / "config.json").is_file():
            raise ValueError(f"{value} is not a sentence-transformers model folder (no config.json)")
        return value.expanduser() if value is not None else None

    @property
    def models_dir(self) -> Path:
        return self.model_cache

    @property
    def adapters_dir(self) -> Path:
        return self.data_dir / "adapters"

    @property
    def chroma_dir(self) -> Path:
        return self.data_dir / "chroma"

    @property
    def base_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"


def load_settings(**overrides: Any) -> Settings:
    """Build settings from the environment with `overrides` (flags) on top; `None` means 'not given'."""
    given = {name: value for name, value in overrides.items() if value is not None}
    try:
        return Settings(**given)
    except ValidationError as error:
        raise SettingsError(_describe(error, given)) from None


def _describe(error: ValidationError, given: dict[str, Any]) -> str:
    lines = []
    for problem in error.errors():
        if not problem["loc"]:  # a rule across settings
            lines.append(f"Invalid settings: {problem['msg']}")
            continue
        name = str(problem["loc"][0])
        source = f"--{name.replace('_', '-')}" if name in given else f"{ENV_PREFIX}{name.upper()}"
        value = problem.get("input")
        shown = "" if isinstance(value, dict) or name == "api_key" else f" (got {value!r})"
        lines.append(f"Invalid setting '{name}' from {source}: {problem['msg']}{shown}")
    return "\n".join(lines)
