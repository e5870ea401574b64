"""Key-value retrieval accuracy by gold position, before vs after a kv_retrieval LoRA run on the default
model, with a short-context check that training kept short answers working.

1. Trains (unless `--adapter` names a trained one) a LoRA adapter with `lcrag finetune`'s code path on
   `--examples` kv_retrieval examples of `--context-tokens` tokens (gold position uniform), on this
   machine's device, and records training tokens/s.
2. Evaluates the base model and the adapter in one vLLM engine (runtime LoRA, CPU): held-out kv_retrieval
   prompts (another seed) with the gold dictionary at each position, and short reading questions.
   A kv answer is correct when it contains the gold value; a short answer when it contains the expected word.
3. Writes JSON (every answer), a Markdown table and a PNG plot under `--out`.

    python -m evals.finetune_kv_retrieval --steps 150 --out out/evals     # ~25 min on 2 cores
    python -m evals.finetune_kv_retrieval --steps 2 --per-position 1      # smoke run
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from evals.common import accuracy_plot, eval_parser

TRAIN_SEED, EVAL_SEED = 0, 1000
SHORT_QUESTIONS = [  # (context, question, expected word)
    ("Mara bought three apples at the market on Tuesday.", "On which day did Mara go to the market?",
     "tuesday"),
    ("The red kite nested on the church tower all spring.", "Where did the kite nest?", "tower"),
    ("Oskar keeps his bicycle in the shed behind the bakery.", "Where does Oskar keep his bicycle?", "shed"),
    ("The train to Lisbon leaves from platform nine at noon.", "Which platform does the train leave from?",
     "nine"),
    ("Inez painted the kitchen door a bright yellow.", "What colour is the kitchen door?", "yellow"),
    ("The museum closes early on Sundays because of the concert.", "When does the museum close early?",
     "sunday"),
    ("Tomas planted forty oak trees along the river.", "What kind of trees did Tomas plant?", "oak"),
    ("The recipe needs two eggs, flour and a spoon of honey.", "What sweetener does the recipe need?",
     "honey"),
    ("Lena's cat sleeps on the piano every afternoon.", "Where does Lena's cat sleep?", "piano"),
    ("The ferry was late because of fog over the harbour.", "Why was the ferry late?", "fog"),
    ("Our neighbour repairs old clocks in his garage.", "What does the neighbour repair?", "clock"),
    ("The choir sang in the cathedral on the first of May.", "Where did the choir sing?", "cathedral"),
]  # fmt: skip


@dataclass(frozen=True)
class Answer:
    model: str  # base | adapter
    task: str  # kv_retrieval | short
    position: int  # gold dictionary index (-1 for short questions)
    expected: str
    text: str
    correct: bool


def kv_eval_set(tokenizer: Any, context_tokens: int, per_position: int) -> list[tuple[int, str, list[int]]]:
    """(gold position, value, prompt ids) for every position of the dictionaries that fit the context."""
    from finetune.data.kv_retrieval import KVRetrievalConfig, example

    probe = example(tokenizer, KVRetrievalConfig(target_tokens=context_tokens), EVAL_SEED, 0)
    items = []
    for position in range(probe.dictionaries):
        config = KVRetrievalConfig(dictionaries=probe.dictionaries, gold_position=position)
        for index in range(per_position):
            item = example(tokenizer, config, EVAL_SEED + position, index)
            items.append((position, item.value, chat_ids(tokenizer, item.messages[0]["content"])))
    return items


def chat_ids(tokenizer: Any, content: str) -> list[int]:
    messages = [{"role": "user", "content": content}]
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return tokenizer(text, add_special_tokens=False).input_ids


def evaluate(model: Path, adapter: Path, tokenizer: Any, kv_items: list, max_len: int) -> list[Answer]:
    from vllm.lora.request import LoRARequest

    from compression.vllm_integration.offline import greedy, offline_engine

    short = [(-1, expected, chat_ids(tokenizer, f"{context}\n\n{question} Answer in a few words."))
             for context, question, expected in SHORT_QUESTIONS]  # fmt: skip
    tasks = ["kv_retrieval"] * len(kv_items) + ["short"] * len(short)
    items = [*kv_items, *short]
    prompts = [{"prompt_token_ids": ids} for _, _, ids in items]
    params = greedy(32)
    params.ignore_eos = False
    answers = []
    with offline_engine(model, eviction=False, kv_space_gb=4, max_model_len=max_len, enable_lora=True,
                        max_lora_rank=8, max_num_batched_tokens=2048) as llm:  # fmt: skip
        for name, lora in [("base", None), ("adapter", LoRARequest("kv", 1, str(adapter)))]:
            outputs = llm.generate(prompts, params, lora_request=lora, use_tqdm=True)
            for task, (position, expected, _), output in zip(tasks, items, outputs, strict=True):
                text = output.outputs[0].text
                answers.append(Answer(name, task, position, expected, text, expected in text.lower()))
    return answers


def accuracy(answers: list[Answer]) -> float:
    return 100.0 * sum(a.correct for a in answers) / len(answers) if answers else float("nan")


def table(answers: list[Answer]) -> dict[str, dict[str, float]]:
    """Accuracy (%) per model: by gold position, all kv prompts, and the short questions."""
    rows: dict[str, dict[str, float]] = {}
    positions = sorted({a.position for a in answers if a.task == "kv_retrieval"})
    for model in ("base", "adapter"):
        mine = [a for a in answers if a.model == model]
        kv = [a for a in mine if a.task == "kv_retrieval"]
        row = {f"pos {p + 1}": accuracy([a for a in kv if a.position == p]) for p in positions}
        row["kv all"] = accuracy(kv)
        row["short"] = accuracy([a for a in mine if a.task == "short"])
        rows[model] = row
    return rows


def markdown(rows: dict[str, dict[str, float]]) -> str:
    columns = list(rows["base"])
    lines = ["| model | " + " | ".join(columns) + " |", "|---|" + "---:|" * len(columns)]
    lines += [f"| {m} | " + " | ".join(f"{row[c]:.0f}" for c in columns) + " |" for m, row in rows.items()]
    return "\n".join(lines)


def plot(rows: dict[str, dict[str, float]], path: Path) -> None:
    positions = [c for c in rows["base"] if c.startswith("pos ")]
    title = "kv_retrieval LoRA on SmolLM2-135M: accuracy by gold position"
    xlabel = f"position of the gold dictionary (1 = first of {len(positions)})"
    with accuracy_plot(path, title, xlabel, "key-value retrieval accuracy (%)", "center right") as axes:
        for model, row in rows.items():
            axes.plot(range(1, len(positions) + 1), [row[p] for p in positions], marker="o", label=model)
        axes.set_xticks(range(1, len(positions) + 1))


def main() -> None:
    parser = eval_parser(__doc__)
    parser.add_argument("--adapter", type=Path, default=None, help="A trained adapter (skips training).")
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--examples", type=int, default=300)
    parser.add_argument("--context-tokens", type=int, default=512)
    parser.add_argument("--learning-rate", type=float, default=5e-4)
    parser.add_argument("--per-position", type=int, default=8)
    args = parser.parse_args()

    from transformers import AutoTokenizer

    from finetune.run import FinetuneRequest, finetune
    from finetune.train import add_evals
    from lcrag.default_model import model_folder

    model = model_folder(args.model)
    tokenizer = AutoTokenizer.from_pretrained(model)
    args.out.mkdir(parents=True, exist_ok=True)
    training: dict[str, Any] = {}
    adapter = args.adapter
    if adapter is None:
        adapter = args.out / "kv_retrieval_adapter"
        request = FinetuneRequest("kv_retrieval", model, adapter, args.steps, args.examples,
                                  args.context_tokens, args.learning_rate, TRAIN_SEED)  # fmt: skip
        result = finetune(request)
        training = {"steps": result.steps, "tokens": result.tokens, "seconds": round(result.seconds, 1),
                    "tokens_per_s": round(result.tokens_per_s, 1), "device": result.device,
                    "loss_first": result.losses[0], "loss_last": result.losses[-1]}  # fmt: skip
        print(json.dumps(training))
    kv_items = kv_eval_set(tokenizer, args.context_tokens, args.per_position)
    answers = evaluate(model, adapter, tokenizer, kv_items, args.context_tokens + 256)
    rows = table(answers)
    report = markdown(rows)
    (args.out / "finetune_kv_retrieval.json").write_text(
        json.dumps({"training": training, "table": rows, "answers": [asdict(a) for a in answers]}, indent=1)
    )
    (args.out / "finetune_kv_retrieval.md").write_text(report + "\n")
    add_evals(adapter, {"kv_retrieval_by_position": rows})
    plot(rows, args.out / "finetune_kv_retrieval.png")
    print(report)


if __name__ == "__main__":
    main()
