"""Request and response models of lcrag's API, declared once."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class StrictModel(BaseModel):
    """Unknown keys are errors, so a typo never silently turns a feature off."""

    model_config = ConfigDict(extra="forbid")


class KVOptions(StrictModel):
    """Per-request KV-cache eviction: `ratio` is the fraction of prompt tokens whose K/V is evicted."""

    policy: str = Field(
        default="none", min_length=1, description="Eviction policy name (GET /v1/kv/policies)."
    )
    ratio: float = Field(default=0.0, ge=0.0, lt=1.0, description="Fraction of prompt K/V to evict.")
    window: int | None = Field(default=None, ge=1, description="Observation / recent window in tokens.")
    sinks: int | None = Field(default=None, ge=0, description="Leading tokens always kept.")

    @property
    def evicts(self) -> bool:
        return self.policy != "none" and self.ratio > 0.0


class LcragOptions(StrictModel):
    """The `lcrag` field of a chat or completion request (an extension of the OpenAI request body)."""

    collection: str | None = Field(default=None, min_length=3, max_length=63, description="Collection name.")
    mode: Literal["rag", "lc", "auto"] | None = Field(default=None, description="How the collection is used.")
    top_k: int | None = Field(default=None, ge=1, le=100, description="Chunks to retrieve in rag mode.")
    kv: KVOptions | None = Field(default=None, description="KV-cache eviction for this request.")
