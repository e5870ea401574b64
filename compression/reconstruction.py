"""The reconstruction passes a KVzip-style cache build runs before compressing a context: each pass prompt is
the context, then a chat turn asking the model to repeat one span of it, then that span, so the pass's
attention shows which context tokens the span's reconstruction needs. Spans are sized so every pass fits
the served model's window; pass prompts share the context as a prefix (vLLM's prefix cache prefills it once).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

REPEAT_ALL = "Repeat the previous context exactly."
REPEAT_FROM = "Repeat the part of the previous context exactly, starting with"
OVERLAP = 8  # tokens of the previous span that a later pass's instruction quotes
MIN_SPAN = 16
_MARKER = "\x00lcrag-repeat\x00"


class ReconstructionError(ValueError):
    """The context leaves no room for reconstruction passes within the model's window."""


@dataclass(frozen=True)
class ReconstructionPass:
    prompt: list[int]
    span: tuple[int, int]


def repeat_turn(tokenizer: PreTrainedTokenizerBase) -> tuple[list[int], list[int]]:
    """Token ids before and after the content of a user turn that ends by opening the assistant's turn, as
    the chat template renders it after an earlier (system) turn; paragraph breaks without a template."""
    if not getattr(tokenizer, "chat_template", None):
        return tokenizer.encode("\n\n", add_special_tokens=False), tokenizer.encode(
            "\n", add_special_tokens=False
        )
    system = [{"role": "system", "content": "x"}]
    before = str(tokenizer.apply_chat_template(system, tokenize=False))
    both = str(
        tokenizer.apply_chat_template(
            [*system, {"role": "user", "content": _MARKER}], tokenize=False, add_generation_prompt=True
        )
    )
    if not both.startswith(before) or _MARKER not in both:
        raise ReconstructionError("the chat template does not render a user turn after a system turn")
    head, tail = both[len(before) :].split(_MARKER)
    return tokenizer.encode(head, add_special_tokens=False), tokenizer.encode(tail, add_special_tokens=False)


def reconstruction_passes(
    context: Sequence[int], tokenizer: PreTrainedTokenizerBase, max_span: int, max_model_len: int
) -> list[ReconstructionPass]:
    """The passes that repeat every token of `context`, in order, each prompt at most `max_model_len - 1`
    tokens (one is left to sample)."""
    head, tail = repeat_turn(tokenizer)
    first = tokenizer.encode(REPEAT_ALL, add_special_tokens=False)
    later = tokenizer.encode(REPEAT_FROM, add_special_tokens=False)
    overhead = len(head) + max(len(first), len(later) + OVERLAP) + len(tail)
    span = min(max_span, max_model_len - 1 - len(context) - overhead)
    if span < MIN_SPAN:
        raise ReconstructionError(
            f"a {len(context)}-token context leaves {max(span, 0)} tokens per reconstruction pass in a "
            f"{max_model_len}-token window (at least {MIN_SPAN} needed): use a query-agnostic policy without "
            "passes (expected_attention, knorm) or a smaller collection"
        )
    passes = []
    for start in range(0, len(context), span):
        end = min(len(context), start + span)
        instruction = first if start == 0 else [*later, *context[max(0, start - OVERLAP) : start]]
        prompt = [*context, *head, *instruction, *tail, *context[start:end]]
        passes.append(ReconstructionPass(prompt, (start, end)))
    return passes
