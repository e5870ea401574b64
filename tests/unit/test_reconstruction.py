"""The reconstruction passes a KVzip-style cache build runs: they repeat every context token once, in order,
each inside the model's window, after a chat turn asking for the repeat; no room is a clear error."""

from pathlib import Path

import pytest

from compression.reconstruction import REPEAT_ALL, REPEAT_FROM, ReconstructionError, reconstruction_passes


@pytest.fixture(scope="module")
def tokenizer(default_model_path: Path):  # type: ignore[no-untyped-def]
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(default_model_path)


def test_passes_repeat_the_whole_context_in_order_inside_the_window(tokenizer) -> None:  # type: ignore[no-untyped-def]
    context = list(range(1000, 1700))
    passes = reconstruction_passes(context, tokenizer, max_span=256, max_model_len=1024)
    assert [p.span for p in passes] == [(0, 256), (256, 512), (512, 700)]
    for reconstruction in passes:
        start, end = reconstruction.span
        prompt = reconstruction.prompt
        assert prompt[: len(context)] == context and prompt[-(end - start) :] == context[start:end]
        assert len(prompt) <= 1023
        turn = tokenizer.decode(prompt[len(context) : len(prompt) - (end - start)])
        assert turn.startswith("<|im_start|>user\n") and turn.endswith("<|im_start|>assistant\n")
        assert (REPEAT_ALL if start == 0 else REPEAT_FROM) in turn
    assert tokenizer.decode(context[248:256]) in tokenizer.decode(passes[1].prompt[700:])


def test_a_window_too_small_for_the_passes_is_a_clear_error(tokenizer) -> None:  # type: ignore[no-untyped-def]
    context = list(range(1000, 2000))
    narrow = reconstruction_passes(context, tokenizer, max_span=2048, max_model_len=1100)
    assert all(len(p.prompt) <= 1099 for p in narrow) and len(narrow) > 1
    with pytest.raises(
        ReconstructionError, match="1000-token context leaves 0 tokens per reconstruction pass"
    ):
        reconstruction_passes(context, tokenizer, max_span=2048, max_model_len=1024)
