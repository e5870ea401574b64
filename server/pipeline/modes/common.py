"""What the mode planners share: the question and earlier turns of the client's messages, its system
instructions, the collection's documents and retrieved chunks as prompts show them, and the length check."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from rag.context import LcDocument, Message, RenderedPrompt, check_fits, lc_documents, render_prompt
from rag.retrieve import Citation, retrieve
from server.errors import BadRequestError
from server.schemas import LcragOptions
from server.services import Services

DEFAULT_TOP_K = 5


def question_of(messages: Sequence[Any]) -> tuple[list[Message], str]:
    """Split chat messages into (earlier turns without system messages, the last user message's text); the
    system messages go into the prompt's own system turn (`client_instructions`)."""
    if not messages:
        raise BadRequestError("'messages' must be a non-empty list when lcrag.collection is set.", "messages")
    last = messages[-1]
    if not isinstance(last, dict) or last.get("role") != "user":
        raise BadRequestError(
            "The last message must be the user's question when lcrag.collection is set.", "messages"
        )
    content = text_of(last.get("content"))
    if not content.strip():
        raise BadRequestError("The user's question is empty.", "messages")
    history = [
        {"role": m["role"], "content": text_of(m.get("content"))}
        for m in messages[:-1]
        if isinstance(m, dict) and m.get("role") != "system"
    ]
    return history, content


def text_of(content: Any) -> str:
    """A message's text: a string, or the text parts of OpenAI content parts."""
    if isinstance(content, list):
        return "\n".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return content if isinstance(content, str) else ""


def client_instructions(messages: Sequence[Any]) -> str:
    """The text of the client's system messages, in order ("" when there are none)."""
    texts = [
        text_of(message.get("content")).strip()
        for message in messages
        if isinstance(message, dict) and message.get("role") == "system"
    ]
    return "\n\n".join(text for text in texts if text)


def with_client_instructions(instructions: str, client: str) -> str:
    """lcrag's instructions for the mode, then the client's own (a persona, answer style ...)."""
    return f"{instructions}\n\n{client}" if client else instructions


def prompt_documents(services: Services, collection: str) -> list[LcDocument]:
    """The collection's documents as an lc prompt shows them: control strings broken (`rag.control_text`)."""
    neutralise = services.control_strings.neutralise
    return [
        replace(document, title=neutralise(document.title), text=neutralise(document.text))
        for document in lc_documents(services.store, collection)
    ]


def prompt_citation(services: Services, citation: Citation) -> Citation:
    """A retrieved chunk as a rag prompt shows it (the response's citation keeps the stored text)."""
    neutralise = services.control_strings.neutralise
    return replace(citation, title=neutralise(citation.title), text=neutralise(citation.text))


def retrieve_for(services: Services, options: LcragOptions, collection: str, question: str) -> list[Citation]:
    """The chunks rag mode cites for `question`, with the request's retrieval settings."""
    how = services.retrieval_options(
        options.retrieval, options.order, options.min_score, rerank=options.rerank
    )
    return retrieve(
        services.store, services.embedder, collection, question, options.top_k or DEFAULT_TOP_K,
        options=how, lexical=services.lexical, reranker=services.reranker,
    )  # fmt: skip


def fitted(
    services: Services, messages: Sequence[Message], max_tokens: int | None, turn: str | None = None
) -> RenderedPrompt:
    """The prompt rendered and tokenized once; ContextTooLongError if it leaves too little for the answer."""
    prompt = render_prompt(services.tokenizer, messages, turn)
    check_fits(len(prompt.token_ids), services.max_model_len, max_tokens or services.settings.answer_tokens)
    return prompt
