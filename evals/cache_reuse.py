"""Accuracy when one compressed context serves many questions (SCBench's point: eviction that looks at one
question may lose what the next one needs), on the default model in vLLM, in lcrag's LC prompt format.

Each context gets four questions:
- passkey: one pass key at a seeded depth in filler prose, asked in four different wordings (one cache must
  serve each wording as well as eviction that sees the wording); correct when the answer's first number
  is the key;
- passkeys: four keys at spread depths, "The pass key of the red door is 48213." ... -> "What is the pass
  key of the red door?", one question per key (the bundled 135M model mostly answers the last one);
- hotpotqa: four HotpotQA dev questions' gold paragraphs and as many of their distractors as fit, shuffled
  (real Wikipedia prose, `evals.datasets`); correct when the normalised gold answer is in the answer.
Per configuration every question is answered:
- `none`: plain LC (the four questions share the context through vLLM's prefix cache);
- `<policy>-<ratio>`: each question's whole prompt compressed after its prefill (query-aware);
- `cache:<policy>-<ratio>`: the context compressed once, query-agnostically, into a context cache that all
  four questions adopt (built first, as `PUT /v1/collections/{name}/kv-cache` does).
(`compression.spec.parse_config`; the older colon spelling, `cache:kvzip:0.75`, is read too.) Answers are
cached per item in `--out`, keyed by the config's dash spelling (a rerun only fills gaps; answers stored
under the old spelling count as the same config's). Writes JSON, Markdown and a PNG.

    python -m evals.cache_reuse --out out/evals                   # ~40 min on 2 cores
    python -m evals.cache_reuse --lengths 2000 --seeds 1 --configs none cache:kvzip-0.75   # quick
"""

from __future__ import annotations

import json
import random
import re
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from compression.spec import parse_config
from evals.api import AnswerCache
from evals.common import accuracy_plot, config_argument, eval_parser, respelled
from evals.compression_sweep import FILLER
from evals.scoring import substring_match
from rag.context import LcDocument, context_token_ids, lc_messages, lc_turn, prompt_token_ids

TASKS = ("passkey", "passkeys", "hotpotqa")
WORDINGS = (
    "What is the pass key?",
    "Which number is the pass key?",
    "Tell me the pass key mentioned in the notes.",
    "What number should be remembered as the pass key?",
)
DEPTHS = (0.15, 0.4, 0.65, 0.9)
DOORS = ("red door", "blue gate", "green hatch", "white vault")
DEFAULT_CONFIGS = [
    "none",
    *(f"{policy}-{ratio}" for policy in ("chunkkv", "snapkv") for ratio in (0.5, 0.75, 0.875)),
    *(
        f"cache:{policy}-{ratio}"
        for policy in ("kvzip", "expected_attention", "knorm")
        for ratio in (0.5, 0.75, 0.875)
    ),
]


@dataclass(frozen=True)
class Context:
    task: str
    length: int
    seed: int
    ids: list[int]  # the context's tokens: what every question's prompt starts with
    questions: list[list[int]]  # whole prompts, one per fact
    answers: list[str]


@dataclass(frozen=True)
class Answer:
    config: str
    task: str
    length: int
    seed: int
    question: int
    expected: str
    text: str
    correct: bool

    @property
    def key(self) -> str:
        return f"{self.config}|{self.task}|{self.length}|{self.seed}|{self.question}"


def facts(task: str, rng: random.Random) -> tuple[list[str], list[float], list[str], list[str]]:
    """The fact sentences of `task`, their depths, its four questions and their answers."""
    if task == "passkey":
        value = str(rng.randrange(10000, 99999))
        sentence = f"The pass key is {value}. Remember it. {value} is the pass key. "
        return (
            [sentence],
            [rng.choice(DEPTHS)],
            [f"{w} Answer with the number only." for w in WORDINGS],
            [value] * 4,
        )
    values = [str(rng.randrange(10000, 99999)) for _ in DEPTHS]
    sentences = [
        f"The pass key of the {door} is {value}. " for door, value in zip(DOORS, values, strict=True)
    ]
    questions = [f"What is the pass key of the {door}? Answer with the number only." for door in DOORS]
    return sentences, list(DEPTHS), questions, values


def make_context(tokenizer: Any, task: str, length: int, seed: int) -> Context:
    """The context of `task` whose longest question prompt is as close to `length` tokens as fits."""
    rng = random.Random(f"{task}-{length}-{seed}")
    if task == "hotpotqa":
        documents_of, questions, answers, most = hotpotqa_documents(rng)
    else:
        documents_of, questions, answers, most = filler_documents(task, rng, length)

    def prompts(units: int) -> tuple[list[int], list[list[int]]]:
        documents = documents_of(units)
        whole = [prompt_token_ids(tokenizer, lc_messages(question, documents)) for question in questions]
        context = context_token_ids(tokenizer, lc_messages(questions[0], documents), lc_turn(questions[0]))
        assert context is not None
        return context, whole

    low, high = 0, most
    while low < high:  # the most material whose longest prompt fits `length`
        middle = (low + high + 1) // 2
        if max(len(p) for p in prompts(middle)[1]) <= length:
            low = middle
        else:
            high = middle - 1
    context, whole = prompts(low)
    return Context(task, length, seed, context, whole, answers)


def filler_documents(task: str, rng: random.Random, length: int) -> tuple[Any, list[str], list[str], int]:
    """The task's facts at their depths in `units` of filler prose (one document)."""
    sentences, depths, questions, answers = facts(task, rng)

    def documents(units: int) -> list[LcDocument]:
        text = ""
        for depth, sentence in zip(depths, sentences, strict=True):
            text += FILLER * (round(units * depth) - text.count(FILLER)) + sentence
        text += FILLER * (units - text.count(FILLER))
        return [LcDocument("notes", "notes.txt", text)]

    return documents, questions, answers, max(2, length // 10)


def hotpotqa_documents(rng: random.Random) -> tuple[Any, list[str], list[str], int]:
    """Four HotpotQA questions: all their gold paragraphs, then `units` of their distractors, shuffled."""
    from evals.datasets import hotpotqa, sample

    items = sample(hotpotqa(), 4, rng.randrange(1 << 30))
    gold = [p for item in items for p in item.paragraphs if p.title in item.gold]
    distractors = [p for item in items for p in item.paragraphs if p.title not in item.gold]
    rng.shuffle(distractors)
    order = rng.random()

    def documents(units: int) -> list[LcDocument]:
        chosen = gold + distractors[:units]
        random.Random(order).shuffle(chosen)
        return [LcDocument(p.title, p.title, p.text) for p in chosen]

    questions = [f"{item.question.strip()} Answer briefly." for item in items]
    return documents, questions, [item.answers[0] for item in items], len(distractors)


def is_correct(task: str, text: str, expected: str) -> bool:
    if task == "hotpotqa":
        return substring_match(text, expected) == 1.0
    found = re.search(r"\d+", text)
    return found is not None and found.group(0) == expected


def params_for(config: str, context: Context, new_tokens: int) -> Any:
    from compression.vllm_integration.offline import greedy

    params = greedy(new_tokens)
    params.ignore_eos = False
    spec, cached = parse_config(config)
    if spec is not None:
        task = spec.task(len(context.ids), "eval") if cached else spec.task()
        params.extra_args = task.extra_args()
    return params


def answer(llm: Any, tokenizer: Any, config: str, context: Context, new_tokens: int) -> list[Answer]:
    """The four questions of `context` under `config`, as one batch (a cache built first)."""
    from compression.vllm_integration.control import control
    from compression.vllm_integration.offline import build_context_cache

    spec, cached = parse_config(config)
    if cached:
        assert spec is not None
        stats = build_context_cache(llm, tokenizer, context.ids, spec, label="eval")
        assert stats is not None and stats.get("cache") == "built", f"{config}: no cache built ({stats})"
    params = params_for(config, context, new_tokens)
    outputs = llm.generate([{"prompt_token_ids": p} for p in context.questions], params, use_tqdm=False)
    if cached:
        control(llm, "drop")  # one at a time: the KV space stays free for the next context
    return [
        Answer(config, context.task, context.length, context.seed, index, expected, out.outputs[0].text,
               is_correct(context.task, out.outputs[0].text, expected))
        for index, (expected, out) in enumerate(zip(context.answers, outputs, strict=True))
    ]  # fmt: skip


def summary(answers: list[Answer]) -> dict[str, dict[str, float]]:
    """Accuracy (%) per config: all, and per task."""
    table: dict[str, dict[str, float]] = {}
    for config in dict.fromkeys(a.config for a in answers):
        mine = [a for a in answers if a.config == config]
        row = {"all": 100.0 * sum(a.correct for a in mine) / len(mine), "n": float(len(mine))}
        for task in sorted({a.task for a in mine}):
            subset = [a for a in mine if a.task == task]
            row[task] = 100.0 * sum(a.correct for a in subset) / len(subset)
        table[config] = row
    return table


def markdown(table: dict[str, dict[str, float]]) -> str:
    columns = [c for c in next(iter(table.values())) if c != "n"]
    lines = ["| config | questions | " + " | ".join(columns) + " |", "|---|---:|" + "---:|" * len(columns)]
    for config, row in table.items():
        lines.append(f"| {config} | {row['n']:.0f} | " + " | ".join(f"{row[c]:.1f}" for c in columns) + " |")
    return "\n".join(lines)


def plot(table: dict[str, dict[str, float]], path: Path) -> None:
    title = "Four questions per context vs KV eviction (SmolLM2-135M)"
    with accuracy_plot(path, title, "evicted fraction of the context's KV cache", "accuracy (%)") as axes:
        baseline = table.get("none", {}).get("all")
        if baseline is not None:
            axes.axhline(baseline, color="black", linestyle="--", label=f"uncompressed ({baseline:.0f} %)")
        curves: dict[tuple[str, bool], list[tuple[float, float]]] = {}
        for config, row in table.items():
            spec, cached = parse_config(config)
            if spec is not None:
                curves.setdefault((spec.policy_text, cached), []).append((spec.ratio, row["all"]))
        for (policy, cached), points in curves.items():
            points.sort()
            style, label = ("-", f"{policy} (one cache)") if cached else (":", f"{policy} (per question)")
            axes.plot([p[0] for p in points], [p[1] for p in points], style, marker="o", label=label)


def main() -> None:
    parser = eval_parser(__doc__)
    parser.add_argument("--lengths", type=int, nargs="+", default=[2000, 4000, 7000])
    parser.add_argument("--seeds", type=int, default=2, help="Contexts per task and length.")
    parser.add_argument("--tasks", nargs="+", choices=TASKS, default=list(TASKS))
    parser.add_argument(
        "--configs",
        nargs="+",
        type=config_argument,
        default=DEFAULT_CONFIGS,
        help="none, <policy>-<ratio> or cache:<policy>-<ratio>",
    )
    parser.add_argument("--new-tokens", type=int, default=16)
    args = parser.parse_args()
    args.configs = list(dict.fromkeys(args.configs))  # `snapkv:0.5 snapkv-0.5` is one config

    from tqdm import tqdm
    from transformers import AutoTokenizer

    from compression.vllm_integration.offline import offline_engine
    from lcrag.default_model import model_folder

    model = model_folder(args.model)
    tokenizer = AutoTokenizer.from_pretrained(model)
    contexts = [
        make_context(tokenizer, task, length, seed)
        for task in args.tasks
        for length in args.lengths
        for seed in range(args.seeds)
    ]
    cached = AnswerCache(args.out / "cache_reuse.answers.jsonl", respelled(Answer), lambda answer: answer.key)
    settings = {"kv_space_gb": 4, "max_model_len": 8192, "max_num_batched_tokens": 2048}
    with offline_engine(model, **settings) as llm, cached.open():
        for config in tqdm(args.configs, desc="configs"):
            for context in contexts:
                if all(
                    f"{config}|{context.task}|{context.length}|{context.seed}|{q}" in cached for q in range(4)
                ):
                    continue
                for new in answer(llm, tokenizer, config, context, args.new_tokens):
                    cached.add(new)
            done = [a for a in cached.answers.values() if a.config == config]
            tqdm.write(f"{config}: {summary(done)[config]}")
    answers = [a for a in cached.answers.values() if a.config in args.configs]
    table = summary(answers)
    command = "python -m evals.cache_reuse " + " ".join(sys.argv[1:])
    (args.out / "cache_reuse.json").write_text(
        json.dumps({"command": command, "summary": table, "answers": [asdict(a) for a in answers]}, indent=1)
    )
    (args.out / "cache_reuse.md").write_text(f"`{command}`\n\n{markdown(table)}\n")
    plot(table, args.out / "cache_reuse.png")
    print(markdown(table))
    print(f"\nWrote {args.out}/cache_reuse.json, .md and .png")


if __name__ == "__main__":
    main()
