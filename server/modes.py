"""Chat modes over a collection: `rag` (retrieved chunks, cited) and `lc` (the whole collection); `auto`
chooses between them (`server.auto`).

A request names its collection and mode in the `lcrag` field or in the model name
(`docs@rag`, `docs@lc`, `docs@auto`, `<adapter>/docs@lc`); `prepare` turns the client's messages into the
prompt the engine sees, with the question (the last user message) after the context and earlier turns kept.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Any

from compression.spec import KVSpec
from rag.context import (
    LC_INSTRUCTIONS,
    RAG_INSTRUCTIONS,
    LcDocument,
    Message,
    check_fits,
    context_token_ids,
    count_prompt_tokens,
    lc_documents,
    lc_messages,
    lc_turn,
    rag_messages,
)
from rag.retrieve import Citation, retrieve
from server.errors import BadRequestError
from server.schemas import LcragOptions
from server.services import Services

DEFAULT_TOP_K = 5
MODEL_NAME_SEPARATOR = "@"
MODES = ("rag", "lc", "auto")


@dataclass(frozen=True)
class ModelName:
    """`[<model>/]<collection>@<mode>[:<kv>]` split into its parts (model None means the served base)."""

    model: str | None
    collection: str
    mode: str
    kv: str | None


@dataclass(frozen=True)
class AutoRoute:
    """Which mode `auto` answered with, and why (reported in the response's `lcrag` field)."""

    route: str  # "rag" or "lc"
    reason: str
    probe_ms: float = 0.0  # time spent on the RAG attempt that decided


@dataclass
class PreparedPrompt:
    mode: str
    collection: str
    messages: list[Message]
    prompt_tokens: int
    citations: list[Citation] = field(default_factory=list)
    retrieval_ms: float = 0.0
    route: AutoRoute | None = None
    context_ids: list[int] | None = (
        None  # lc: the collection's part of the prompt, the same for every question
    )
    question: str = ""
    documents: list[LcDocument] = field(default_factory=list)  # lc: the documents as the prompt shows them


def parse_model_name(model: str) -> ModelName | None:
    """None for a plain model name; the parts for `docs@rag`-style names."""
    if MODEL_NAME_SEPARATOR not in model:
        return None
    target, _, mode_spec = model.rpartition(MODEL_NAME_SEPARATOR)
    base, _, collection = target.rpartition("/")
    mode, _, kv = mode_spec.partition(":")
    return ModelName(base or None, collection, mode, kv or None)


def apply_model_name(payload: dict[str, Any], options: LcragOptions, served_model: str) -> LcragOptions:
    """Fill collection, mode and KV eviction from a `docs@mode[:policy-ratio]` model name (the `lcrag`
    field wins where both speak)."""
    parsed = parse_model_name(str(payload.get("model", "")))
    if parsed is None:
        return options
    named = payload["model"]
    payload["model"] = parsed.model or served_model
    from_name: dict[str, Any] = {"collection": parsed.collection, "mode": parsed.mode}
    if parsed.kv is not None:
        from_name["kv"] = kv_of_model_name(parsed.kv, named)
    try:
        return LcragOptions.model_validate({**from_name, **options.model_dump(exclude_none=True)})
    except ValueError:
        raise BadRequestError(
            f"model {parsed.collection + MODEL_NAME_SEPARATOR + parsed.mode!r}: use '<collection>@rag', "
            "'<collection>@lc' or '<collection>@auto' with a collection name of 3-63 characters.",
            param="model",
        ) from None


def kv_of_model_name(spec: str, model: str) -> KVSpec:
    """The KV part of a `docs@lc:snapkv-0.75` model name; a 400 naming `model` when it is wrong."""
    try:
        return KVSpec.parse(spec)
    except ValueError as error:
        raise BadRequestError(f"model {model!r}: {error}", param="model") from None


def parse_mode_spec(spec: str) -> tuple[str, KVSpec | None]:
    """`rag`, `lc`, `auto` or `<mode>:<policy>-<ratio>` (e.g. `lc:snapkv-0.75`) as (mode, KV options).
    Raises ValueError with a message naming what is wrong."""
    mode, _, kv = spec.partition(":")
    if mode not in MODES:
        raise ValueError(f"unknown mode {spec!r}: use one of {', '.join(MODES)}, or e.g. 'lc:snapkv-0.75'")
    return mode, (KVSpec.parse(kv) if kv else None)


def question_of(messages: Any) -> tuple[list[Message], str]:
    """Split chat messages into (earlier turns without system messages, the last user message's text); the
    system messages go into the prompt's own system turn (`client_instructions`)."""
    if not isinstance(messages, list) or not messages:
        raise BadRequestError("'messages' must be a non-empty list when lcrag.collection is set.", "messages")
    last = messages[-1]
    if not isinstance(last, dict) or last.get("role") != "user":
        raise BadRequestError(
            "The last message must be the user's question when lcrag.collection is set.", "messages"
        )
    content = last.get("content")
    if isinstance(content, list):  # OpenAI content parts: keep the text ones
        content = "\n".join(part.get("text", "") for part in content if isinstance(part, dict))
    if not isinstance(content, str) or not content.strip():
        raise BadRequestError("The user's question is empty.", "messages")
    history = [m for m in messages[:-1] if isinstance(m, dict) and m.get("role") != "system"]
    return history, content


def client_instructions(messages: list[Any]) -> str:
    """The text of the client's system messages, in order ("" when there are none)."""
    texts = []
    for message in messages:
        if isinstance(message, dict) and message.get("role") == "system":
            content = message.get("content")
            if isinstance(content, list):
                content = "\n".join(part.get("text", "") for part in content if isinstance(part, dict))
            if isinstance(content, str) and content.strip():
                texts.append(content.strip())
    return "\n\n".join(texts)


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


def collection_context(services: Services, collection: str) -> list[int]:
    """The token ids every lc prompt over `collection` starts with (its instructions and documents); raises
    RagError for an unknown collection or one that does not fit lc mode."""
    question = "?"
    messages = lc_messages(question, prompt_documents(services, collection))
    tokens = count_prompt_tokens(services.tokenizer, messages)
    check_fits(tokens, services.max_model_len, services.settings.answer_tokens)
    context = context_token_ids(services.tokenizer, messages, lc_turn(question))
    if context is None:
        raise RuntimeError(f"the tokenizer merges {collection!r}'s lc context with the question")
    return context


def retrieve_for(services: Services, options: LcragOptions, collection: str, question: str) -> list[Citation]:
    """The chunks rag mode cites for `question`, with the request's retrieval settings."""
    how = services.retrieval_options(
        options.retrieval, options.order, options.min_score, rerank=options.rerank
    )
    return retrieve(
        services.store, services.embedder, collection, question, options.top_k or DEFAULT_TOP_K,
        options=how, lexical=services.lexical, reranker=services.reranker,
    )  # fmt: skip


def prepare(
    services: Services,
    options: LcragOptions,
    messages: Any,
    max_tokens: int | None,
    rag_instructions: str = RAG_INSTRUCTIONS,
) -> PreparedPrompt:
    """The prompt for `options.mode` (`rag` or `lc`) over `options.collection`; raises RagError for a bad
    collection. `auto` chooses between the two with the engine's help: `server.auto.prepare_auto`."""
    assert options.collection is not None
    mode = options.mode or "rag"
    if mode not in ("rag", "lc"):
        raise ValueError(f"prepare() builds rag and lc prompts, not {mode!r}")
    history, question = question_of(messages)
    client = client_instructions(messages)
    started = time.perf_counter()
    documents: list[LcDocument] = []
    if mode == "rag":
        citations = retrieve_for(services, options, options.collection, question)
        shown = [prompt_citation(services, citation) for citation in citations]
        built = rag_messages(question, shown, with_client_instructions(rag_instructions, client))
        prompt = [built[0], *history, built[-1]]
    else:
        citations, documents = [], prompt_documents(services, options.collection)
        instructions = with_client_instructions(LC_INSTRUCTIONS, client)
        prompt = lc_messages(question, documents, history, instructions)
    retrieval_ms = (time.perf_counter() - started) * 1000.0
    tokens = count_prompt_tokens(services.tokenizer, prompt)
    check_fits(tokens, services.max_model_len, max_tokens or services.settings.answer_tokens)
    context = (
        context_token_ids(services.tokenizer, prompt, lc_turn(question, history)) if mode == "lc" else None
    )
    return PreparedPrompt(
        mode,
        options.collection,
        prompt,
        tokens,
        citations,
        retrieval_ms,
        context_ids=context,
        question=question,
        documents=documents,
    )
