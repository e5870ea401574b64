"""Keep documents from speaking in the chat template's voice.

vLLM renders a chat prompt to text and then tokenises it, so a document containing `<|im_start|>system`
would become the model's real control tokens: a document could open its own system turn. Every string the
tokenizer treats as one added token (`<|im_start|>`, `<|im_end|>`, `<|endoftext|>` ...) is broken with a
zero-width space after its first character wherever it occurs in document text, so it is tokenised as the
characters it is made of. The stored documents stay as they were; only the prompt's copy changes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

ZERO_WIDTH_SPACE = "\u200b"


@dataclass(frozen=True)
class ControlStrings:
    """The added-token strings of one tokenizer, and how to make text safe from them."""

    pattern: re.Pattern[str] | None

    @classmethod
    def of(cls, tokenizer: PreTrainedTokenizerBase) -> ControlStrings:
        strings = {str(token) for token in tokenizer.get_added_vocab()} | set(tokenizer.all_special_tokens)
        markers = sorted((s for s in strings if len(s) > 1), key=len, reverse=True)  # longest first
        return cls(re.compile("|".join(map(re.escape, markers))) if markers else None)

    def neutralise(self, text: str) -> str:
        """`text` with every control string broken up, so none of it tokenises to a control token."""
        if self.pattern is None:
            return text
        return self.pattern.sub(lambda found: found[0][0] + ZERO_WIDTH_SPACE + found[0][1:], text)
