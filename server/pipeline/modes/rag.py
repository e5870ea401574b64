"""`rag` mode: the chunks retrieval finds for the question, numbered, with an instruction to cite them."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from rag.context import RAG_INSTRUCTIONS, rag_messages
from server.pipeline.modes.common import (
    client_instructions,
    fitted,
    prompt_citation,
    question_of,
    retrieve_for,
    with_client_instructions,
)
from server.pipeline.plan import ModePrompt
from server.schemas import LcragOptions
from server.services import Services


def plan_rag(
    services: Services,
    options: LcragOptions,
    collection: str,
    messages: Sequence[Any],
    max_tokens: int | None,
    instructions: str = RAG_INSTRUCTIONS,
) -> ModePrompt:
    """The rag prompt over `collection` for the last user message; earlier turns kept. Raises RagError for a
    bad collection, ContextTooLongError for a prompt that leaves too little for the answer."""
    history, question = question_of(messages)
    started = time.perf_counter()
    citations = retrieve_for(services, options, collection, question)
    shown = [prompt_citation(services, citation) for citation in citations]
    built = rag_messages(
        question, shown, with_client_instructions(instructions, client_instructions(messages))
    )
    prompt = [built[0], *history, built[-1]]
    retrieval_ms = (time.perf_counter() - started) * 1000.0
    rendered = fitted(services, prompt, max_tokens)
    return ModePrompt("rag", collection, rendered, question, citations, retrieval_ms=retrieval_ms)
