"""Compressed context caches vs plain LC vs per-request eviction: many questions over many collections in a
KV space that holds only a few uncompressed prompts, every number measured in the same run.

One in-process vLLM engine (the default model, eviction loaded, `--kv-prompts` whole uncompressed prompts
of KV space) answers `--questions` questions, round-robin over `--collections` collections of about
`--context-tokens` tokens each (lcrag's LC prompt: instructions, documents, question), `--concurrency` in
flight at a time. Per configuration:
- `lc`: plain LC; vLLM's prefix cache keeps what fits;
- `lc:<policy>-<ratio>`: each prompt compressed on its own after its prefill (query-aware eviction);
- `cache:<policy>-<ratio>`: each collection's context compressed once into a resident context cache
  (built first, timed), questions adopt it and prefill only themselves.
Reported: questions per minute and TTFT median / p90 under that load, TTFT of one question alone (cold for
`lc`: nothing cached), caches resident at the end, preemptions, caches released under pressure, and each
configuration's questions per minute and lone TTFT as ratios to `lc`. (`<policy>-<ratio>` as in
`compression.spec.parse_config`, options in brackets; the older `<policy>:<ratio>` is read too.)

    python -m bench.collection_cache --out out/bench                     # ~30 min on 2 cores
    python -m bench.collection_cache --collections 2 --questions 4 --context-tokens 1500 \
        --configs lc cache:knorm-0.875                                   # quick
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections import deque
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.common import engine_parser
from bench.corpus import document
from compression.spec import KVSpec, config_text, parse_config
from compression.vllm_integration.control import control
from compression.vllm_integration.offline import (
    build_context_cache,
    counted_preemptions,
    greedy,
    offline_engine,
)
from compression.vllm_integration.plan import cdiv
from rag.context import LcDocument, context_token_ids, lc_messages, lc_turn, prompt_token_ids

QUESTIONS = [
    "What did the harbour master record?",
    "Who repaired the northern bridge?",
    "When was the broken clock measured?",
    "What did the lighthouse keeper paint?",
]
DEFAULT_CONFIGS = ["lc", "lc:chunkkv-0.875", "cache:kvzip-0.75", "cache:kvzip-0.875"]


@dataclass(frozen=True)
class Collection:
    context: list[int]
    prompts: list[list[int]]  # one per question, each starting with `context`


@dataclass(frozen=True)
class Timing:
    ttft_s: float
    total_s: float


@dataclass
class ConfigResult:
    config: str
    questions: int
    seconds: float
    ttft_median_s: float
    ttft_p90_s: float
    lone_ttft_s: float
    build_s: float | None
    resident: int | None
    preemptions: int
    released: int | None

    @property
    def per_minute(self) -> float:
        return 60.0 * self.questions / self.seconds


def make_collections(tokenizer: Any, count: int, tokens: int) -> list[Collection]:
    """`count` collections of prose documents, about `tokens` tokens each, with their question prompts."""
    collections = []
    for index in range(count):
        documents, size, seed = [], 0, 0
        while size < tokens:
            text = document(index * 1000 + seed, 12)
            documents.append(LcDocument(f"c{index}-{seed}", f"records-{index}-{seed}.txt", text))
            size += len(tokenizer.encode(text, add_special_tokens=False)) + 8
            seed += 1
        prompts, context = [], None
        for question in QUESTIONS:
            messages = lc_messages(question, documents)
            prompts.append(prompt_token_ids(tokenizer, messages))
            context = context_token_ids(tokenizer, messages, lc_turn(question))
        assert context is not None and all(prompt[: len(context)] == context for prompt in prompts)
        collections.append(Collection(context, prompts))
    return collections


def parse(config: str) -> tuple[KVSpec | None, bool]:
    """(spec, cached): `lc` (or `none`) -> (None, False); `lc:<policy>-<ratio>` -> (spec, False), per-request
    eviction; `cache:<policy>-<ratio>` -> (spec, True), a context cache (`compression.spec.parse_config`,
    which reads the older colon spelling too)."""
    if config in ("lc", "none"):
        return None, False
    spec, cached = parse_config(config.removeprefix("lc:"))
    if spec is None or cached != config.startswith("cache:"):
        raise ValueError(f"config {config!r}: write lc, lc:<policy>-<ratio> or cache:<policy>-<ratio>")
    return spec, cached


def config_argument(text: str) -> str:
    """A `--configs` value in the one spelling (`lc`, `lc:snapkv-0.75`, `cache:kvzip-0.875`)."""
    try:
        spec, cached = parse(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return "lc" if spec is None else config_text(spec, cached) if cached else f"lc:{spec}"


def params_for(config: str, context: list[int], new_tokens: int) -> Any:
    from vllm import SamplingParams

    spec, cached = parse(config)
    if not cached:
        return greedy(new_tokens, spec)
    assert spec is not None
    extra = spec.task(len(context), "bench").extra_args()
    return SamplingParams(max_tokens=new_tokens, temperature=0, ignore_eos=True, extra_args=extra)


def run_load(llm: Any, work: list[tuple[list[int], Any]], concurrency: int) -> tuple[list[Timing], float]:
    """Closed loop: keep `concurrency` requests in flight until `work` is done; per-request times."""
    engine = llm.llm_engine
    pending = deque(enumerate(work))
    submitted: dict[str, float] = {}
    first: dict[str, float] = {}
    timings: dict[int, Timing] = {}
    started = time.perf_counter()

    def top_up() -> None:
        while pending and len(submitted) - len(timings) < concurrency:
            index, (prompt, params) = pending.popleft()
            engine.add_request(f"q{index}", {"prompt_token_ids": prompt}, params)
            submitted[f"q{index}"] = time.perf_counter()

    top_up()
    while len(timings) < len(work):
        for output in engine.step():
            request_id = output.request_id.split("-")[0]
            now = time.perf_counter()
            if output.outputs[0].token_ids and request_id not in first:
                first[request_id] = now
            if output.finished:
                at = submitted[request_id]
                timings[int(request_id[1:])] = Timing(first[request_id] - at, now - at)
        top_up()
    return [timings[index] for index in range(len(work))], time.perf_counter() - started


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def measure(
    llm: Any, tokenizer: Any, config: str, collections: list[Collection], args: argparse.Namespace
) -> ConfigResult:
    control(llm, "drop")
    llm.reset_prefix_cache()
    released_before = control(llm, "list")["released_under_pressure"]  # counted since the engine started
    build_s = None
    spec, cached = parse(config)
    if cached:
        assert spec is not None
        builds = []
        for index, collection in enumerate(collections):
            started = time.perf_counter()
            stats = build_context_cache(llm, tokenizer, collection.context, spec, label="bench")
            builds.append(time.perf_counter() - started)
            print(f"  built {index + 1}/{len(collections)}: {stats} in {builds[-1]:.1f} s", flush=True)
        build_s = statistics.median(builds)
    work = [
        (collection.prompts[turn % len(QUESTIONS)], params_for(config, collection.context, args.new_tokens))
        for turn in range(args.questions)
        for collection in [collections[turn % len(collections)]]
    ]
    with counted_preemptions(llm) as preemptions:
        timings, seconds = run_load(llm, work, args.concurrency)
        lone = lone_ttft(llm, config, collections, args)
    listing = control(llm, "list") if cached else None
    ttfts = [timing.ttft_s for timing in timings]
    return ConfigResult(
        config,
        len(work),
        seconds,
        statistics.median(ttfts),
        percentile(ttfts, 0.9),
        lone,
        build_s,
        listing["cached_contexts"] if listing else None,
        len(preemptions),
        listing["released_under_pressure"] - released_before if listing else None,
    )


def lone_ttft(llm: Any, config: str, collections: list[Collection], args: argparse.Namespace) -> float:
    """Median TTFT of one question at a time on an idle engine: for `lc`, nothing of it cached."""
    times = []
    for collection in collections[: args.lone]:
        if not parse(config)[1]:
            llm.reset_prefix_cache()
        prompt = collection.prompts[-1]
        (timing,), _ = run_load(llm, [(prompt, params_for(config, collection.context, args.new_tokens))], 1)
        times.append(timing.ttft_s)
    return statistics.median(times)


def table(results: list[ConfigResult]) -> str:
    base = results[0]
    lines = [
        "| config | questions/min | vs lc | TTFT median s | TTFT p90 s | lone TTFT s | vs lc cold | build s "
        "(median) | caches resident | preemptions | caches released |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        build = "-" if r.build_s is None else f"{r.build_s:.1f}"
        resident = "-" if r.resident is None else str(r.resident)
        released = "-" if r.released is None else str(r.released)
        speedup, lone = r.per_minute / base.per_minute, r.lone_ttft_s / base.lone_ttft_s
        lines.append(
            f"| {r.config} | {r.per_minute:.2f} | {speedup:.2f}x | {r.ttft_median_s:.2f} | "
            f"{r.ttft_p90_s:.2f} | {r.lone_ttft_s:.2f} | {lone:.3f}x | {build} | {resident} | "
            f"{r.preemptions} | {released} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = engine_parser(__doc__)
    parser.add_argument("--collections", type=int, default=8)
    parser.add_argument("--context-tokens", type=int, default=6000)
    parser.add_argument("--questions", type=int, default=32)
    parser.add_argument("--concurrency", type=int, default=4, help="Questions in flight at a time.")
    parser.add_argument("--new-tokens", type=int, default=16)
    parser.add_argument("--kv-prompts", type=int, default=2, help="KV space, in whole uncompressed prompts.")
    parser.add_argument("--block-size", type=int, default=32)
    parser.add_argument("--lone", type=int, default=3, help="Lone questions timed per configuration.")
    parser.add_argument(
        "--configs",
        nargs="+",
        type=config_argument,
        default=DEFAULT_CONFIGS,
        help="lc, lc:<policy>-<ratio> or cache:<policy>-<ratio>",
    )
    parser.add_argument("--out", type=Path, default=None, help="Folder for the JSON and Markdown results.")
    args = parser.parse_args()
    if args.configs[0] != "lc":
        parser.error("the first config must be 'lc' (the baseline)")
    args.configs = list(dict.fromkeys(args.configs))

    from transformers import AutoTokenizer

    from lcrag.default_model import model_folder

    model = model_folder(args.model)
    tokenizer = AutoTokenizer.from_pretrained(model)
    collections = make_collections(tokenizer, args.collections, args.context_tokens)
    longest = max(len(prompt) for collection in collections for prompt in collection.prompts)
    blocks = args.kv_prompts * cdiv(longest + args.new_tokens, args.block_size) + 1
    print(
        f"{args.collections} collections, contexts {min(len(c.context) for c in collections)}-"
        f"{max(len(c.context) for c in collections)} tokens; KV space {blocks} blocks of {args.block_size} "
        f"({args.kv_prompts} prompts of {longest} + {args.new_tokens})",
        flush=True,
    )
    results = []
    window = min(8192, (blocks - 1) * args.block_size)  # vLLM wants one whole window to fit the KV space
    settings = {"block_size": args.block_size, "max_model_len": window, "num_gpu_blocks_override": blocks}
    with offline_engine(model, **settings) as llm:
        for config in args.configs:
            print(f"{config} ...", flush=True)
            results.append(measure(llm, tokenizer, config, collections, args))
            print(f"  {results[-1]}", flush=True)
    command = "python -m bench.collection_cache " + " ".join(sys.argv[1:])
    report = f"`{command}`\n\n{table(results)}\n"
    print("\n" + report)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "collection_cache.md").write_text(report)
        rows = [{**asdict(r), "per_minute": r.per_minute} for r in results]
        (args.out / "collection_cache.json").write_text(
            json.dumps({"command": command, "results": rows}, indent=1)
        )


if __name__ == "__main__":
    main()
