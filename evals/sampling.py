"""Which sampling settings the UI should default to: the same HotpotQA and SQuAD questions and collections
as `lc-vs-rag`, answered in `lc` and `rag@5` at the UI's answer length under each setting, scored for
accuracy and for looping (the bundled model's greedy LC answers can repeat one phrase until the token
limit: "Standard Version of the Standard Version ...").

A setting is `greedy`, `rp<P>` (greedy with vLLM's repetition penalty P) or `t<T>` (temperature T, top_p
0.9, a fixed seed per question). An answer *loops* when one word 4-gram occurs 3 or more times in it.

    python -m evals.sampling --out out/evals          # ~25 min on 2 cores

The questions go in as a user types them into the UI (no "answer with a few words" suffix).
"""

from __future__ import annotations

import statistics
import zlib
from dataclasses import dataclass
from typing import Any

from evals.api import (
    AnswerCache,
    add_server_options,
    ask,
    suite_client,
    token_counter,
    write_report,
)
from evals.common import bootstrap_ci, eval_parser
from evals.lc_vs_rag import DATASETS, groups, mode_body, upload
from evals.scoring import f1, normalize_answer, substring_match
from lcrag.client import served_model

LOOP_NGRAM = 4
LOOP_REPEATS = 3
DEFAULT_SETTINGS = ("greedy", "rp1.1", "rp1.2", "t0.7")


def sampling_fields(setting: str, seed: int) -> dict[str, Any]:
    """The request fields of a setting name (`greedy`, `rp1.1`, `t0.7`)."""
    if setting == "greedy":
        return {"temperature": 0}
    if setting.startswith("rp"):
        return {"temperature": 0, "repetition_penalty": float(setting[2:])}
    if setting.startswith("t"):
        return {"temperature": float(setting[1:]), "top_p": 0.9, "seed": seed}
    raise ValueError(f"unknown sampling setting {setting!r}: greedy, rp<penalty> or t<temperature>")


def loops(text: str, n: int = LOOP_NGRAM, repeats: int = LOOP_REPEATS) -> bool:
    """Whether one word n-gram occurs `repeats` or more times in `text`."""
    words = text.lower().split()
    counts: dict[tuple[str, ...], int] = {}
    for i in range(len(words) - n + 1):
        gram = tuple(words[i : i + n])
        counts[gram] = counts.get(gram, 0) + 1
        if counts[gram] >= repeats:
            return True
    return False


@dataclass(frozen=True)
class SampledAnswer:
    dataset: str
    question_id: str
    mode: str
    setting: str
    answer: str
    substring: float
    f1: float
    loops: bool
    words: int
    error: str | None = None

    @property
    def key(self) -> str:
        return f"{self.dataset}|{self.question_id}|{self.mode}|{self.setting}"


def summary(answers: list[SampledAnswer]) -> list[dict[str, Any]]:
    """One row per (mode, setting) over both datasets: accuracy and loop rate with intervals, length."""
    rows = []
    for mode, setting in dict.fromkeys((a.mode, a.setting) for a in answers):
        mine = [a for a in answers if a.mode == mode and a.setting == setting]
        substrings, looped = [a.substring for a in mine], [float(a.loops) for a in mine]
        rows.append(
            {
                "mode": mode,
                "setting": setting,
                "answers": len(mine),
                "substring": 100 * statistics.fmean(substrings),
                "ci": tuple(100 * v for v in bootstrap_ci(substrings)),
                "f1": 100 * statistics.fmean(a.f1 for a in mine),
                "loops": 100 * statistics.fmean(looped),
                "loops_ci": tuple(100 * v for v in bootstrap_ci(looped)),
                "words": statistics.median(a.words for a in mine),
            }
        )
    return rows


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| mode | setting | answers | substring % [95 % CI] | F1 % | looping % [95 % CI] | words (median) |",
        "|---|---|---:|---|---:|---|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['mode']} | {r['setting']} | {r['answers']} | {r['substring']:.1f} "
            f"[{r['ci'][0]:.1f}, {r['ci'][1]:.1f}] | {r['f1']:.1f} | {r['loops']:.1f} "
            f"[{r['loops_ci'][0]:.1f}, {r['loops_ci'][1]:.1f}] | {r['words']:.0f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = eval_parser(__doc__)
    add_server_options(parser)
    parser.add_argument("--questions", type=int, default=10, help="Questions per dataset.")
    parser.add_argument("--settings", nargs="+", default=list(DEFAULT_SETTINGS))
    parser.add_argument("--modes", nargs="+", default=["lc", "rag@5"])
    parser.add_argument("--context-tokens", type=int, default=6000)
    parser.add_argument("--max-tokens", type=int, default=128, help="The UI's default answer length.")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    for setting in args.settings:
        sampling_fields(setting, 0)  # a bad name fails before the server starts

    from tqdm import tqdm

    count = token_counter(args.model)
    answers = AnswerCache(args.out / "sampling.answers.jsonl", SampledAnswer, lambda answer: answer.key)
    wanted = [(m, s) for m in args.modes for s in args.settings]
    with suite_client(args, "sampling") as http, answers.open():
        served = args.adapter or served_model(http)
        work = [g for d in DATASETS for g in groups(d, args.questions, args.context_tokens, count, args.seed)]
        progress = tqdm(total=sum(len(g.items) for g in work) * len(wanted), desc="answers")
        for group in work:
            pending = [(item, mode, setting) for item in group.items for mode, setting in wanted
                       if f"{group.dataset}|{item.id}|{mode}|{setting}" not in answers]  # fmt: skip
            progress.update(len(group.items) * len(wanted) - len(pending))
            if not pending:
                continue
            upload(http, group, args.seed)
            for item, mode, setting in pending:
                # the question as the UI sends it (no "answer briefly" suffix); one seed per question
                body = mode_body(mode, group.name, item.question.strip(), served, args.max_tokens, suffix="")
                seed = args.seed + zlib.crc32(item.id.encode())
                reply = ask(http, {**body, **sampling_fields(setting, seed)})
                text = reply.text
                answers.add(SampledAnswer(
                    group.dataset, item.id, mode, setting, text,
                    max(substring_match(text, gold) for gold in item.answers),
                    max(f1(text, gold) for gold in item.answers),
                    loops(text), len(normalize_answer(text).split()), reply.error,
                ))  # fmt: skip
                progress.update(1)
            http.delete(f"/v1/collections/{group.name}")
        progress.close()
    chosen = [a for a in answers.answers.values() if (a.mode, a.setting) in wanted]
    rows = summary(chosen)
    write_report(args.out, "sampling", rows, markdown(rows))
    print(markdown(rows))


if __name__ == "__main__":
    main()
