"""Accuracy vs KV eviction ratio, per policy, on needle questions answered by the default model in vLLM.

Two needle tasks, each planted at several depths in filler prose of several lengths:
- passkey: "The pass key is 48213. Remember it." -> "What is the pass key?"
- kv lookup: a list of `key: value` lines (random 6-letter keys, 5-digit values) -> "What is the value of
  key X?"
An answer is correct when its first number is the planted value. Every configuration (`none`, then each
policy at each ratio, `<policy>-<ratio>`) answers the same prompts in one batch on one engine. Writes JSON
(every answer), a Markdown table and a PNG plot.

    python -m evals.compression_sweep --out out/evals        # ~50 min on 2 cores
    python -m evals.compression_sweep --lengths 1000 --depths 0.5 --policies snapkv --ratios 0.5   # quick
"""

from __future__ import annotations

import json
import random
import re
import string
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from compression.spec import KVSpec, config_text, parse_config
from evals.common import accuracy_plot, eval_parser

FILLER = (
    "The grass grows green on the hills, and the river runs past the mill. The sky is wide over the fields "
    "and the farmers walk home at dusk. "
)


@dataclass(frozen=True)
class Needle:
    task: str
    length: int  # target prompt tokens
    depth: float  # where the fact sits, 0 = start of the context, 1 = end
    answer: str
    prompt: list[int]


@dataclass(frozen=True)
class Answer:
    config: str
    task: str
    length: int
    depth: float
    expected: str
    text: str
    correct: bool


def chat_prompt(tokenizer: Any, context: str, question: str) -> list[int]:
    messages = [{"role": "user", "content": f"{context}\n\n{question} Answer with the number only."}]
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return tokenizer(text, add_special_tokens=False).input_ids


def fit(tokenizer: Any, build: Any, length: int) -> list[int]:
    """The prompt `build(n)` whose token count is closest to `length` from below (n = filler units)."""
    low, high = 1, max(2, length // 10)
    while low < high:
        middle = (low + high + 1) // 2
        if len(build(middle)) <= length:
            low = middle
        else:
            high = middle - 1
    return build(low)


def passkey(tokenizer: Any, length: int, depth: float, rng: random.Random) -> Needle:
    value = str(rng.randrange(10000, 99999))
    fact = f"The pass key is {value}. Remember it. {value} is the pass key. "

    def build(units: int) -> list[int]:
        before = round(units * depth)
        context = FILLER * before + fact + FILLER * (units - before)
        return chat_prompt(tokenizer, context, "What is the pass key?")

    return Needle("passkey", length, depth, value, fit(tokenizer, build, length))


def kv_lookup(tokenizer: Any, length: int, depth: float, rng: random.Random) -> Needle:
    def word() -> str:
        return "".join(rng.choice(string.ascii_lowercase) for _ in range(6))

    pairs = [(word(), str(rng.randrange(10000, 99999))) for _ in range(length // 8)]
    target = pairs[min(len(pairs) - 1, round(depth * (len(pairs) - 1)))]

    def build(units: int) -> list[int]:
        shown = pairs[:units]
        if target not in shown:  # keep the target at its depth among the shown lines
            shown = shown[:-1]
            shown.insert(round(depth * len(shown)), target)
        lines = "\n".join(f"{key}: {value}" for key, value in shown)
        return chat_prompt(tokenizer, f"Keys and values:\n{lines}", f"What is the value of key {target[0]}?")

    return Needle("kv_lookup", length, depth, target[1], fit(tokenizer, build, length))


TASKS = {"passkey": passkey, "kv_lookup": kv_lookup}


def needles(
    tokenizer: Any, lengths: list[int], depths: list[float], seed: int, tasks: list[str] | None = None
) -> list[Needle]:
    rng = random.Random(seed)
    return [
        TASKS[task](tokenizer, length, depth, rng)
        for task in tasks or list(TASKS)
        for length in lengths
        for depth in depths
    ]


def is_correct(text: str, expected: str) -> bool:
    found = re.search(r"\d+", text)
    return found is not None and found.group(0) == expected


def summary(answers: list[Answer]) -> dict[str, dict[str, float]]:
    """Accuracy (%) per config, overall and per prompt length."""
    table: dict[str, dict[str, float]] = {}
    for config in dict.fromkeys(a.config for a in answers):
        mine = [a for a in answers if a.config == config]
        row = {"all": 100.0 * sum(a.correct for a in mine) / len(mine)}
        for length in sorted({a.length for a in mine}):
            subset = [a for a in mine if a.length == length]
            row[str(length)] = 100.0 * sum(a.correct for a in subset) / len(subset)
        table[config] = row
    return table


def markdown(table: dict[str, dict[str, float]]) -> str:
    columns = list(next(iter(table.values())))
    header = "| config | " + " | ".join(f"{c} tokens" if c != "all" else "all" for c in columns) + " |"
    lines = [header, "|---|" + "---:|" * len(columns)]
    for config, row in table.items():
        lines.append(f"| {config} | " + " | ".join(f"{row[c]:.1f}" for c in columns) + " |")
    return "\n".join(lines)


def plot(table: dict[str, dict[str, float]], path: Path) -> None:
    title = "Needle accuracy vs KV eviction (SmolLM2-135M, vLLM CPU)"
    xlabel, ylabel = "evicted fraction of the prompt's KV cache", "needle accuracy (%)"
    with accuracy_plot(path, title, xlabel, ylabel) as axes:
        baseline = table["none"]["all"]
        axes.axhline(baseline, color="black", linestyle="--", label=f"none ({baseline:.0f} %)")
        curves: dict[str, list[tuple[float, float]]] = {}
        for config, row in table.items():
            spec, _ = parse_config(config)
            if spec is not None:
                curves.setdefault(spec.policy_text, []).append((spec.ratio, row["all"]))
        for policy, points in sorted(curves.items()):
            points.sort()
            xs, ys = [0.0] + [p[0] for p in points], [baseline] + [p[1] for p in points]
            axes.plot(xs, ys, marker="o", label=policy)


def main() -> None:
    parser = eval_parser(__doc__)
    parser.add_argument("--lengths", type=int, nargs="+", default=[2000, 4000, 7000])
    parser.add_argument("--depths", type=float, nargs="+", default=[0.1, 0.5, 0.9])
    parser.add_argument("--policies", nargs="+", default=["chunkkv", "snapkv", "streaming_llm", "knorm"])
    parser.add_argument("--ratios", type=float, nargs="+", default=[0.5, 0.75])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tasks", nargs="+", choices=list(TASKS), default=list(TASKS))
    parser.add_argument(
        "--dtype",
        choices=["auto", "float32", "bfloat16"],
        default="float32",
        help="Model and KV-cache dtype; auto is what `lcrag serve` picks (bfloat16 on CPUs with AMX).",
    )
    parser.add_argument(
        "--context-extension",
        default=None,
        metavar="yarn:FACTOR",
        help="Serve the model past its window with YaRN RoPE scaling, as `lcrag serve --context-extension`.",
    )
    args = parser.parse_args()

    from tqdm import tqdm
    from transformers import AutoTokenizer

    from compression.vllm_integration.cpu.cache_layout import cpu_dtype
    from compression.vllm_integration.offline import greedy, offline_engine
    from lcrag.context_extension import engine_settings as extension_settings
    from lcrag.default_model import model_folder

    model = model_folder(args.model)
    tokenizer = AutoTokenizer.from_pretrained(model)
    items = needles(tokenizer, args.lengths, args.depths, args.seed, args.tasks)
    specs = [KVSpec.parse(f"{policy}-{ratio}") for policy in args.policies for ratio in args.ratios]
    configs = [config_text(None), *map(config_text, specs)]  # `none`, `<policy>-<ratio>`
    answers: list[Answer] = []
    dtype = cpu_dtype() if args.dtype == "auto" else args.dtype
    engine_settings: dict[str, Any] = {"max_model_len": 8192, "max_num_batched_tokens": 2048, "dtype": dtype}
    if args.context_extension:
        engine_settings |= extension_settings(args.context_extension, Path(model))
    with offline_engine(model, kv_space_gb=4, **engine_settings) as llm:
        for config in tqdm(configs, desc="configs"):
            params = greedy(24, parse_config(config)[0])
            params.ignore_eos = False
            llm.reset_prefix_cache()
            outputs = llm.generate([{"prompt_token_ids": n.prompt} for n in items], params, use_tqdm=False)
            for needle, output in zip(items, outputs, strict=True):
                text = output.outputs[0].text
                correct = is_correct(text, needle.answer)
                answers.append(
                    Answer(config, needle.task, needle.length, needle.depth, needle.answer, text, correct)
                )
            tqdm.write(f"{config}: {summary([a for a in answers if a.config == config])[config]}")

    args.out.mkdir(parents=True, exist_ok=True)
    table = summary(answers)
    (args.out / "compression_sweep.json").write_text(
        json.dumps(
            {
                "dtype": dtype,
                "context_extension": args.context_extension,
                "summary": table,
                "answers": [asdict(a) for a in answers],
            },
            indent=1,
        )
    )
    (args.out / "compression_sweep.md").write_text(markdown(table) + "\n")
    plot(table, args.out / "compression_sweep.png")
    print(markdown(table))
    print(f"\nWrote {args.out}/compression_sweep.json, .md and .png")


if __name__ == "__main__":
    main()
