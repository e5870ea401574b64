"""Prompts for both modes, in one place, with the question after the context.

- RAG: the retrieved chunks, numbered [1]..[k] with their titles (and pages), to be cited as [n]; the
  Self-Route variant (auto mode) asks for a fixed marker when the chunks do not hold the answer.
- LC: every complete document of the collection in upload order, each under its title, rebuilt from its
  chunks, then any earlier turns as a transcript, then the question, all in one user turn (the bundled
  135M model answers from documents there, not from a system turn or a separate one). Everything before
  the transcript or question is the collection's *context*, the same for every question, so vLLM's prefix
  cache and lcrag's compressed context caches reuse it (`context_token_ids`). `check_fits` refuses a prompt
  that leaves no room for the answer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import groupby
from typing import TYPE_CHECKING

from rag.chunking import joined
from rag.errors import ContextTooLongError
from rag.retrieve import Citation
from rag.store import Store

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

Message = dict[str, str]

_USE_PASSAGES = "Answer the question using only the numbered passages. Cite each passage you use as [n]. "
RAG_INSTRUCTIONS = _USE_PASSAGES + "If the passages do not contain the answer, say that you do not know."
UNANSWERABLE = "UNANSWERABLE"
SELF_ROUTE_INSTRUCTIONS = (
    _USE_PASSAGES + f"If the passages do not contain the answer, reply with the single word {UNANSWERABLE}."
)
LC_INSTRUCTIONS = (
    "Answer the question using only the documents. "
    "If the documents do not contain the answer, say that you do not know."
)


NO_PASSAGES = "(No passage of the collection is relevant enough to this question.)"
_SPEAKERS = {"user": "User", "assistant": "Assistant"}
LC_TEMPLATE_TOKENS = 64  # system instructions, headings and the chat template around the documents
LC_DOCUMENT_HEADER_TOKENS = 8  # "Document N: <title>" per document


@dataclass(frozen=True)
class LcDocument:
    doc_id: str
    title: str
    text: str
    chunks: tuple[tuple[int, int, int], ...] = ()  # (chunk index, start, end) of each chunk in `text`


def rag_messages(
    question: str, citations: Sequence[Citation], instructions: str = RAG_INSTRUCTIONS
) -> list[Message]:
    passages = (
        "\n\n".join(
            f"[{c.number}] {c.title}{f' (page {c.page})' if c.page else ''}\n{c.text}" for c in citations
        )
        or NO_PASSAGES
    )
    return _messages(instructions, f"Passages:\n\n{passages}", question)


def lc_documents(store: Store, collection: str) -> list[LcDocument]:
    """The whole collection in upload order, each document's text rebuilt from its chunks."""
    stored = store.chunks(collection)
    documents = []
    for doc_id, group in groupby(stored, key=lambda s: s.doc_id):
        members = list(group)
        text, spans = joined([s.chunk for s in members])
        chunks = tuple((chunk.index, start, end) for chunk, start, end in spans)
        documents.append(LcDocument(doc_id, members[0].doc_title, text, chunks))
    return documents


def lc_messages(
    question: str,
    documents: Sequence[LcDocument],
    history: Sequence[Message] = (),
    instructions: str = LC_INSTRUCTIONS,
) -> list[Message]:
    """The LC prompt: instructions, then one user turn of documents, earlier turns and the question."""
    return [
        {"role": "system", "content": instructions},
        {"role": "user", "content": lc_context(documents) + lc_turn(question, history)},
    ]


def lc_context(documents: Sequence[LcDocument]) -> str:
    """The collection as the LC prompt shows it (each document's trailing whitespace dropped, so the context
    always ends in text and its tokens are a prefix of every prompt's tokens)."""
    body = "\n\n".join(
        f"Document {i}: {d.title}\n{d.text.rstrip()}" for i, d in enumerate(documents, start=1)
    )
    return f"Documents:\n\n{body}"


def lc_turn(question: str, history: Sequence[Message] = ()) -> str:
    """What follows the context: earlier turns (a transcript) and the question."""
    transcript = "".join(f"\n{_SPEAKERS.get(m['role'], m['role'])}: {m['content']}" for m in history)
    earlier = f"\n\nEarlier conversation:{transcript}" if history else ""
    return f"{earlier}\n\nQuestion: {question}"


def context_token_ids(
    tokenizer: PreTrainedTokenizerBase, messages: Sequence[Message], turn: str
) -> list[int] | None:
    """The token ids of an LC prompt up to its `turn` (see `lc_turn`), when they are exactly the start of
    the whole prompt's ids (None if the tokenizer merges across the boundary)."""
    return render_prompt(tokenizer, messages, turn).context_ids


@dataclass(frozen=True)
class RenderedPrompt:
    """A chat prompt as the engine sees it: the chat template's text and its token ids, and for an LC prompt
    how many leading tokens are the collection's context (None when none, or when the tokenizer merges a
    token across the context's end)."""

    messages: list[Message]
    text: str
    token_ids: list[int]
    context_tokens: int | None = None

    @property
    def context_ids(self) -> list[int] | None:
        return self.token_ids[: self.context_tokens] if self.context_tokens is not None else None


def render_prompt(
    tokenizer: PreTrainedTokenizerBase, messages: Sequence[Message], turn: str | None = None
) -> RenderedPrompt:
    """Render and tokenize `messages` once, as vLLM's chat endpoint would (template for generation, no added
    special tokens); with `turn` (see `lc_turn`), also find where the context before it ends."""
    text = str(tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True))
    boundary = text.rfind(turn) if turn else -1
    if boundary <= 0:
        return RenderedPrompt(list(messages), text, tokenizer.encode(text, add_special_tokens=False))
    if not tokenizer.is_fast:  # no offsets: tokenize the context apart and check it is a prefix
        ids = tokenizer.encode(text, add_special_tokens=False)
        context = tokenizer.encode(text[:boundary], add_special_tokens=False)
        clean = ids[: len(context)] == context and len(context) < len(ids)
        return RenderedPrompt(list(messages), text, ids, len(context) if clean else None)
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = list(encoded["input_ids"]), encoded["offset_mapping"]
    inside = sum(1 for _, end in offsets if end <= boundary)
    clean = 0 < inside < len(ids) and offsets[inside][0] >= boundary
    return RenderedPrompt(list(messages), text, ids, inside if clean else None)


def estimate_lc_prompt_tokens(document_tokens: Sequence[int]) -> int:
    """The lc-mode prompt length from per-document token counts, without fetching the texts (a pre-flight
    estimate; `count_prompt_tokens` on the built prompt is exact)."""
    return LC_TEMPLATE_TOKENS + sum(document_tokens) + LC_DOCUMENT_HEADER_TOKENS * len(document_tokens)


def prompt_token_ids(tokenizer: PreTrainedTokenizerBase, messages: Sequence[Message]) -> list[int]:
    """The prompt's tokens, as vLLM's chat endpoint renders the template (for generation) and encodes it."""
    return render_prompt(tokenizer, messages).token_ids


def count_prompt_tokens(tokenizer: PreTrainedTokenizerBase, messages: Sequence[Message]) -> int:
    """Exact prompt length in tokens, as the chat template renders it for generation."""
    return len(prompt_token_ids(tokenizer, messages))


def check_fits(prompt_tokens: int, max_model_len: int, answer_tokens: int) -> None:
    """Raise if the prompt leaves fewer than `answer_tokens` of the context for the answer."""
    available = max_model_len - answer_tokens
    if prompt_tokens > available:
        raise ContextTooLongError(
            f"The whole collection needs {prompt_tokens} prompt tokens but only {available} are available "
            f"({max_model_len} context - {answer_tokens} for the answer): "
            "use mode 'rag', or a smaller collection.",
            needed=prompt_tokens,
            available=available,
        )


def _messages(instructions: str, context: str, question: str) -> list[Message]:
    return [
        {"role": "system", "content": instructions},
        {"role": "user", "content": f"{context}\n\nQuestion: {question}"},
    ]
