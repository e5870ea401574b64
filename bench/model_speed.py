"""Prefill and decode speed of a running lcrag server, measured through its OpenAI API.

Prefill: time of a 1-token completion of an N-token prompt (N/time, tokens/s). Decode: a completion of
M tokens with EOS ignored, minus the prefill time of the same prompt, over M - 1 (tokens/s). Each number
is the median of `--repeats` runs; the prompt varies per run so the prefix cache never serves it.

    python -m bench.model_speed --base-url http://127.0.0.1:8000 --prompt-tokens 1024 --decode-tokens 128
"""

from __future__ import annotations

import statistics
import time

from openai import OpenAI

from bench.common import server_parser

FILLER = (
    "The archive keeps letters, ledgers and maps from the river towns, sorted by year and by the hand "
    "that wrote them, so a reader can follow one family across three generations of trade. "
)


def prompt_of(tokens: int, tokenizer_len: int, salt: int) -> str:
    """Prose of about `tokens` tokens; `tokenizer_len` is the token count of one FILLER sentence."""
    return f"Run {salt}. " + FILLER * max(1, tokens // tokenizer_len)


def timed_completion(client: OpenAI, model: str, prompt: str, max_tokens: int) -> tuple[float, int, int]:
    start = time.perf_counter()
    response = client.completions.create(
        model=model,
        prompt=prompt,
        max_tokens=max_tokens,
        temperature=0.0,
        extra_body={"ignore_eos": True},
    )
    elapsed = time.perf_counter() - start
    assert response.usage is not None
    return elapsed, response.usage.prompt_tokens, response.usage.completion_tokens


def main() -> None:
    parser = server_parser(__doc__)
    parser.add_argument("--prompt-tokens", type=int, default=1024)
    parser.add_argument("--decode-tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    client = OpenAI(base_url=f"{args.base_url}/v1", api_key=args.api_key or "none")
    model = client.models.list().data[0].id
    _, sentence_tokens, _ = timed_completion(client, model, FILLER, 1)
    prefill, decode, prompt_tokens = [], [], 0
    for run in range(args.repeats):
        prompt = prompt_of(args.prompt_tokens, sentence_tokens, salt=2 * run)
        t_prefill, prompt_tokens, _ = timed_completion(client, model, prompt, 1)
        prompt2 = prompt_of(args.prompt_tokens, sentence_tokens, salt=2 * run + 1)
        t_total, _, generated = timed_completion(client, model, prompt2, args.decode_tokens)
        prefill.append(prompt_tokens / t_prefill)
        decode.append((generated - 1) / (t_total - t_prefill))
    print(
        f"model: {model}  prompt: {prompt_tokens} tokens  decode: {args.decode_tokens} tokens  "
        f"repeats: {args.repeats}"
    )
    print("| metric | median | min | max |\n|---|---|---|---|")
    for name, values in (("prefill tokens/s", prefill), ("decode tokens/s", decode)):
        print(f"| {name} | {statistics.median(values):.1f} | {min(values):.1f} | {max(values):.1f} |")


if __name__ == "__main__":
    main()
