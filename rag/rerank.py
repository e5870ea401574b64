"""An optional cross-encoder reranker (`--reranker PATH`): the retrieval's first candidates, re-scored by a
sentence-transformers `CrossEncoder` that reads the question and each chunk together, best first.

No cross-encoder ships offline; point `--reranker` (LCRAG_RERANKER) at a local folder of one, e.g.
`cross-encoder/ms-marco-MiniLM-L6-v2` saved with `CrossEncoder(...).save(PATH)` where a hub is reachable.
A cross-encoder costs one forward pass per (question, chunk) pair: `RERANK_CANDIDATES_PER_RESULT` x top_k
pairs per question, about as much as embedding those chunks.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sentence_transformers import CrossEncoder

RERANK_CANDIDATES_PER_RESULT = 4  # the retrieval hands the reranker this many candidates per result kept
BATCH_SIZE = 16


class Reranker:
    """Scores (question, passage) pairs with a local cross-encoder, loaded on first use."""

    def __init__(self, model_path: Path | str) -> None:
        self.model_path = Path(model_path)
        if not (self.model_path / "config.json").is_file():
            raise FileNotFoundError(f"{self.model_path} is not a cross-encoder folder (no config.json).")
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        return self.model_path.name

    @cached_property
    def _model(self) -> CrossEncoder:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from sentence_transformers import CrossEncoder

        return CrossEncoder(str(self.model_path), device="cpu", local_files_only=True)

    def scores(self, question: str, passages: Sequence[str]) -> list[float]:
        """The cross-encoder's relevance of each passage to `question` (higher is more relevant)."""
        if not passages:
            return []
        with self._lock:  # one load, and one forward pass at a time on the CPU
            model = self._model
            values = model.predict([(question, text) for text in passages], batch_size=BATCH_SIZE)
        return [float(value) for value in values]
