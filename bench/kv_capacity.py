"""KV eviction's effect on capacity and throughput, as ratios against `none` measured in the same run.

One in-process vLLM engine (the default model, eviction loaded) with a fixed number of KV blocks runs
`--requests` long-context requests (distinct ~`--prompt-tokens` prose prompts, `--new-tokens` each) at
once, per configuration. Reported per configuration: peak requests running and peak requests decoding at
the same time (a request decodes once its prompt is in the cache: the capacity eviction buys), preemptions,
output tokens/s over the whole batch, and each as a ratio to `none`. Then two overheads:
- plugin loaded but off: decode time of a short-prompt batch on the eviction engine vs stock vLLM;
- scoring + compaction: one request's prefill (1 output token) with a policy vs `none`.
Configurations are `none` or `<policy>-<ratio>` (`compression.spec.parse_config`; the older
`<policy>:<ratio>` is read too).

    python -m bench.kv_capacity                       # ~15 min on 2 cores
    python -m bench.kv_capacity --requests 3 --prompt-tokens 1500 --configs none snapkv-0.875   # quick
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import engine_parser
from compression.policies import kept_count
from compression.spec import KVSpec, normal_config, parse_config
from compression.vllm_integration.offline import counted_preemptions, greedy, offline_engine, scheduler_of
from compression.vllm_integration.scheduler import cdiv

FILLER = (
    "The archive keeps letters, ledgers and maps from the river towns, sorted by year and by the hand "
    "that wrote them, so a reader can follow one family across three generations of trade. "
)
DEFAULT_CONFIGS = ["none", "snapkv-0.5", "snapkv-0.75", "snapkv-0.875", "streaming_llm-0.875", "knorm-0.875"]


@dataclass(frozen=True)
class BatchResult:
    config: str
    peak_running: int
    peak_decoding: int
    preemptions: int
    seconds: float
    output_tokens: int

    @property
    def tokens_per_s(self) -> float:
        return self.output_tokens / self.seconds


def eviction_of(config: str) -> KVSpec | None:
    """`none` -> None, `snapkv-0.75` (or the older `snapkv:0.75`) -> its spec; a context cache (`cache:`)
    is not what this benchmark measures."""
    spec, cached = parse_config(config)
    if cached:
        raise ValueError(f"config {config!r}: write none or <policy>-<ratio> (no context caches here)")
    return spec


def config_argument(text: str) -> str:
    """A `--configs` value in the one spelling; argparse reports what is wrong with a bad one."""
    try:
        eviction_of(text)
        return normal_config(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def params_of(config: str, new_tokens: int) -> Any:
    return greedy(new_tokens, eviction_of(config))


def prompts(tokenizer: Any, count: int, tokens: int, salt: str) -> list[list[int]]:
    """Distinct prose prompts of exactly `tokens` tokens (the first block differs, so no prefix sharing)."""
    body = tokenizer(FILLER * (tokens // 30 + 1), add_special_tokens=False).input_ids
    out = []
    for index in range(count):
        head = tokenizer(f"Ledger {salt}-{index}. ", add_special_tokens=False).input_ids
        out.append((head + body)[:tokens])
    return out


def run_batch(llm: Any, config: str, batch: list[list[int]], new_tokens: int) -> BatchResult:
    """Submit the whole batch, step the engine to the end, sample the scheduler after every step."""
    scheduler = scheduler_of(llm)
    llm.reset_prefix_cache()
    engine = llm.llm_engine
    for index, prompt in enumerate(batch):
        engine.add_request(f"{config}-{index}", {"prompt_token_ids": prompt}, params_of(config, new_tokens))
    peak_running = peak_decoding = produced = 0
    started = time.perf_counter()
    with counted_preemptions(llm) as preempted:
        while engine.has_unfinished_requests():
            for output in engine.step():
                if output.finished:
                    produced += len(output.outputs[0].token_ids)
            running = scheduler.running
            peak_running = max(peak_running, len(running))
            decoding = sum(1 for r in running if r.num_computed_tokens >= r.num_prompt_tokens)
            peak_decoding = max(peak_decoding, decoding)
    return BatchResult(
        config, peak_running, peak_decoding, len(preempted), time.perf_counter() - started, produced
    )


def kv_bytes_per_token(model: Path) -> int:
    """float32 K and V of every layer for one token."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(model)
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    return config.num_hidden_layers * config.num_key_value_heads * head_dim * 2 * 4


def block_arithmetic(configs: list[str], blocks: int, block_size: int, prompt: int, new: int) -> str:
    """The peak each config can reach in `blocks`: a request being prefilled holds its whole prompt until
    it is compacted, so peak = 1 + (blocks - prompt blocks) // blocks per compacted request."""
    prompt_blocks = cdiv(prompt, block_size)
    lines = [f"KV space {blocks} blocks of {block_size}; a prompt being prefilled holds {prompt_blocks}:"]
    for config in configs:
        spec = eviction_of(config)
        ratio = 0.0 if spec is None else spec.ratio
        kept = kept_count(prompt, ratio)
        held = cdiv(kept + new, block_size)
        peak = blocks // held if ratio == 0 else 1 + (blocks - prompt_blocks) // held
        lines.append(f"  {config}: {held} blocks per request after compaction -> at most {peak} at once")
    return "\n".join(lines)


def median_seconds(action: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def generate_once(llm: Any, batch: list[list[int]], params: Any) -> Callable[[], object]:
    def action() -> object:
        llm.reset_prefix_cache()
        return llm.generate([{"prompt_token_ids": p} for p in batch], params, use_tqdm=False)

    return action


def table(results: list[BatchResult]) -> str:
    base = results[0]
    lines = [
        "| config | peak running | peak decoding | capacity vs none | preemptions | output tok/s | "
        "throughput vs none |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r.config} | {r.peak_running} | {r.peak_decoding} | "
            f"{r.peak_decoding / max(1, base.peak_decoding):.2f}x | {r.preemptions} | "
            f"{r.tokens_per_s:.2f} | {r.tokens_per_s / base.tokens_per_s:.2f}x |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = engine_parser(__doc__)
    parser.add_argument("--requests", type=int, default=6)
    parser.add_argument("--prompt-tokens", type=int, default=6000)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--full-requests-that-fit", type=int, default=2, help="KV space, in whole requests.")
    parser.add_argument("--block-size", type=int, default=128, help="KV block size (vLLM's CPU default 128).")
    parser.add_argument("--skip-overheads", action="store_true", help="Only the batches.")
    parser.add_argument(
        "--max-batched-tokens",
        type=int,
        default=2048,
        help="Tokens per engine step. At or above --prompt-tokens a step prefills one whole prompt, so "
        "requests stay resident for --new-tokens prompt admissions and the batch can fill the KV space.",
    )
    parser.add_argument(
        "--configs", nargs="+", type=config_argument, default=DEFAULT_CONFIGS, help="none or <policy>-<ratio>"
    )
    parser.add_argument("--repeats", type=int, default=3, help="Runs per overhead measurement (median).")
    parser.add_argument(
        "--prefill-configs",
        nargs="+",
        type=config_argument,
        default=["snapkv-0.875", "chunkkv-0.875"],
        help="<policy>-<ratio> whose scoring + compaction overhead on one prefill is measured against none",
    )
    parser.add_argument(
        "--overheads-only", action="store_true", help="Skip the batches (capacity, throughput)."
    )
    args = parser.parse_args()
    if args.configs[0] != "none":
        parser.error("the first config must be 'none' (the baseline)")
    args.configs = list(dict.fromkeys(args.configs))
    args.prefill_configs = [config for config in dict.fromkeys(args.prefill_configs) if config != "none"]

    from transformers import AutoTokenizer

    from lcrag.default_model import model_folder

    model = model_folder(args.model)
    tokenizer = AutoTokenizer.from_pretrained(model)
    block_size = args.block_size
    per_request = cdiv(args.prompt_tokens + args.new_tokens, block_size)
    blocks = per_request * args.full_requests_that_fit
    engine_settings = {
        "block_size": block_size,
        "max_model_len": per_request * block_size,
        "max_num_batched_tokens": args.max_batched_tokens,
        "num_gpu_blocks_override": blocks,
    }
    space_gb = cdiv(blocks * block_size * kv_bytes_per_token(model), 2**30)
    short = prompts(tokenizer, 4, 256, "decode")

    if not args.overheads_only:
        print(block_arithmetic(args.configs, blocks, block_size, args.prompt_tokens, args.new_tokens))
    if not args.skip_overheads:
        with offline_engine(model, eviction=False, kv_space_gb=space_gb, **engine_settings) as stock:
            stock_decode = median_seconds(generate_once(stock, short, greedy(128)), args.repeats)

    with offline_engine(model, kv_space_gb=space_gb, **engine_settings) as llm:
        if not args.skip_overheads:
            plugin_decode = median_seconds(generate_once(llm, short, greedy(128)), args.repeats)
            one = prompts(tokenizer, 1, args.prompt_tokens, "prefill")
            prefill = {
                config: median_seconds(generate_once(llm, one, params_of(config, 1)), args.repeats)
                for config in ("none", *args.prefill_configs)
            }
        results = []
        for config in [] if args.overheads_only else args.configs:
            batch = prompts(tokenizer, args.requests, args.prompt_tokens, config)
            results.append(run_batch(llm, config, batch, args.new_tokens))
            print(f"{config}: {results[-1]}", flush=True)

    print(
        f"\n{args.requests} requests x {args.prompt_tokens} prompt tokens + {args.new_tokens} new; "
        f"KV space {blocks} blocks of {block_size} ({args.full_requests_that_fit} whole requests)\n"
    )
    if results:
        print(table(results))
    if args.skip_overheads:
        return
    print(
        f"\nPlugin loaded, eviction off, 4 x 256-token prompts + 128 new tokens: {plugin_decode:.2f} s vs "
        f"stock vLLM {stock_decode:.2f} s ({(plugin_decode / stock_decode - 1) * 100:+.1f} %)"
    )
    plain = prefill["none"]
    for config in args.prefill_configs:
        scored = prefill[config]
        print(
            f"Prefill of {args.prompt_tokens} tokens + 1 token: {config} {scored:.2f} s vs none "
            f"{plain:.2f} s ({(scored / plain - 1) * 100:+.1f} %)"
        )


if __name__ == "__main__":
    main()
