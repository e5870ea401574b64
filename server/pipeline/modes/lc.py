"""`lc` mode: the whole collection in the prompt, then earlier turns and the question; the collection's part
(`context`) is the same for every question, so it can be cached and compressed once."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from rag.context import LC_INSTRUCTIONS, lc_messages, lc_turn
from server.pipeline.modes.common import (
    client_instructions,
    fitted,
    prompt_documents,
    question_of,
    with_client_instructions,
)
from server.pipeline.plan import ModePrompt
from server.services import Services


def plan_lc(
    services: Services, collection: str, messages: Sequence[Any], max_tokens: int | None
) -> ModePrompt:
    """The lc prompt over `collection`; raises RagError for an unknown collection, ContextTooLongError for one
    that does not fit with the answer."""
    history, question = question_of(messages)
    started = time.perf_counter()
    documents = prompt_documents(services, collection)
    instructions = with_client_instructions(LC_INSTRUCTIONS, client_instructions(messages))
    prompt = lc_messages(question, documents, history, instructions)
    retrieval_ms = (time.perf_counter() - started) * 1000.0
    rendered = fitted(services, prompt, max_tokens, lc_turn(question, history))
    return ModePrompt("lc", collection, rendered, question, documents=documents, retrieval_ms=retrieval_ms)


def collection_context(services: Services, collection: str) -> list[int]:
    """The token ids every lc prompt over `collection` starts with (its instructions and documents); raises
    RagError for an unknown collection or one that does not fit lc mode."""
    planned = plan_lc(services, collection, [{"role": "user", "content": "?"}], None)
    context = planned.prompt.context_ids
    if context is None:
        raise RuntimeError(f"the tokenizer merges {collection!r}'s lc context with the question")
    return context
