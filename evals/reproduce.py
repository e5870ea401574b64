"""The three fine-tuning papers' findings in miniature on the bundled model, in one command, each step an
lcrag command you could run yourself (all of them are written to report.md with their wall times):

(a) Xiong et al. (2024): a `kv_retrieval` LoRA flattens the lost-in-the-middle curve (`position`, base vs
    adapter) and keeps short answers working (`kv-retrieval`'s short-context check);
(b) An et al. (2024, IN2): an `in2` LoRA flattens the VaL curves (`val`, base vs adapter);
(c) Molfese et al. (2026): `multidoc` SFT and compression-aware SFT (`--compression snapkv-0.75`) vs base on
    held-out questions of the training collection (`collection`: cloze is multidoc's own question kind),
    in RAG, LC and LC under eviction at 0.75 and 0.875 (kvzip).

The training collection is ~`--context-tokens` of HotpotQA dev paragraphs (the last questions', which no
other suite reads), so LC holds all of it; `lcrag finetune` trains without its held-out documents, which
the `collection` suite then asks about. Everything lives in `--out`: the data dir (collection, adapters),
each suite's output folder, the step logs and report.md. A rerun skips the ingest once done, trained
adapters and answered questions, and starts no server at all when the evaluation already ran with the same
budget, model, server flags and adapters.

CPU budget on 2 cores (measured, `docs/benchmarks.md`): the defaults took 1 h 50 min on an AMX CPU (training
37 min in bf16 at 190-265 tokens/s, the served suites 73 min); a CPU without AMX trains in fp32, ~1.6x
slower (about 2 h 15 min in all); `--quick` (a few training steps, each suite's --quick) about 30 minutes
and shows the pipeline, not the papers' effects.

    lcrag eval reproduce --out out/reproduce
    lcrag eval reproduce --quick --out out/reproduce-quick
"""

from __future__ import annotations

import argparse
import json
import math
import re
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

COLLECTION = "repro-hotpotqa"
TRAIN_LEARNING_RATE = "5e-4"  # what the kv_retrieval study measured (docs/benchmarks.md)
LCRAG = Path(sys.executable).with_name("lcrag")


@dataclass(frozen=True)
class Budget:
    """Sizes of every step (the defaults, or `--quick`)."""

    steps: int
    examples: int
    train_context: int  # tokens of each in2 / multidoc training example
    kv_context: int  # tokens of each kv_retrieval example
    suite_flags: tuple[str, ...]  # passed to position, val and collection

    @classmethod
    def of(cls, quick: bool) -> Budget:
        if quick:
            return cls(steps=8, examples=8, train_context=768, kv_context=384, suite_flags=("--quick",))
        return cls(steps=100, examples=100, train_context=1536, kv_context=512, suite_flags=())


@dataclass(frozen=True)
class Adapter:
    name: str
    recipe: str
    extra: tuple[str, ...] = ()

    def train_command(self, budget: Budget, data_dir: Path, model: Path | None) -> list[str]:
        context = budget.kv_context if self.recipe == "kv_retrieval" else budget.train_context
        collection = () if self.recipe == "kv_retrieval" else ("--collection", COLLECTION)
        return [str(LCRAG), "finetune", "--recipe", self.recipe, "--out", self.name, *collection,
                "--steps", str(budget.steps), "--examples", str(budget.examples), "--context-tokens",
                str(context), "--learning-rate", TRAIN_LEARNING_RATE, *self.extra,
                "--data-dir", str(data_dir), *(["--model", str(model)] if model else [])]  # fmt: skip


ADAPTERS = (
    Adapter("repro-kv-retrieval", "kv_retrieval"),
    Adapter("repro-in2", "in2"),
    Adapter("repro-multidoc", "multidoc", ("--target", "answer")),
    Adapter("repro-multidoc-ca", "multidoc", ("--target", "answer", "--compression", "snapkv-0.75")),
)


def budget_of(args: argparse.Namespace) -> Budget:
    """`--quick` or the defaults, with `--steps` and `--train-context` on top."""
    budget = Budget.of(args.quick)
    steps = args.steps or budget.steps
    return replace(budget, steps=steps, examples=max(budget.examples, steps),
                   train_context=args.train_context or budget.train_context)  # fmt: skip


def training_files(context_tokens: int, count_tokens: Any) -> list[tuple[str, str]]:
    """(file name, text): distinct paragraphs of the last HotpotQA dev questions, ~`context_tokens` in all."""
    from evals.datasets import hotpotqa
    from evals.lc_vs_rag import file_name

    files: dict[str, str] = {}
    used = 0
    for item in reversed(hotpotqa()):
        for paragraph in item.paragraphs:
            tokens = count_tokens(paragraph.text) + 8
            if paragraph.title in files or used + tokens > context_tokens:
                continue
            files[paragraph.title] = paragraph.text
            used += tokens
        if used > context_tokens - 50:
            break
    return [(file_name(title), text) for title, text in files.items()]


class Steps:
    """Runs the steps in order, each logged to `<out>/logs/<name>.log`, timing each."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.logs = out / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.times: dict[str, float] = {}
        self.commands: dict[str, str] = {}

    def run(self, name: str, command: Sequence[str]) -> None:
        self.commands[name] = " ".join(command)
        print(f"[reproduce] {name}: {self.commands[name]}", flush=True)
        started = time.perf_counter()
        log = self.logs / f"{name}.log"
        with log.open("w") as sink:
            finished = subprocess.run(command, stdout=sink, stderr=subprocess.STDOUT, check=False)
        self.times[name] = time.perf_counter() - started
        if finished.returncode != 0:
            tail = log.read_text()[-3000:]
            raise SystemExit(f"lcrag eval reproduce: step {name!r} failed ({finished.returncode}):\n{tail}")


def suite(name: str, *flags: str) -> list[str]:
    return [sys.executable, "-m", f"evals.{name}", *flags]


def run_all(args: argparse.Namespace) -> Steps:
    """Build the collection, train, evaluate; every step's output under `args.out`."""
    from evals.api import token_counter

    budget = budget_of(args)
    data_dir = args.out / "data"
    steps = Steps(args.out)
    model = ["--model", str(args.model)] if args.model else []
    corpus = data_dir / "corpus"
    if not corpus.is_dir():
        files = training_files(args.context_tokens, token_counter(args.model))
        (data_dir / "corpus.partial").mkdir(parents=True, exist_ok=True)
        for name, text in files:
            (data_dir / "corpus.partial" / name).write_text(text)
        (data_dir / "corpus.partial").rename(corpus)
    ingested = data_dir / "corpus.ingested"
    if not ingested.is_file():
        steps.run("ingest", [str(LCRAG), "ingest", "--collection", COLLECTION, str(corpus), "--data-dir",
                             str(data_dir), *model])  # fmt: skip
        ingested.touch()
    for adapter in ADAPTERS:
        if not (data_dir / "adapters" / adapter.name / "adapter_config.json").is_file():
            steps.run(f"train-{adapter.name}", adapter.train_command(budget, data_dir, args.model))
    kv_adapter = data_dir / "adapters" / ADAPTERS[0].name
    kv_report = args.out / "kv_retrieval" / "finetune_kv_retrieval.json"
    if not _newer(kv_report, kv_adapter / "adapter_config.json"):
        steps.run("kv-retrieval", suite("finetune_kv_retrieval", "--adapter", str(kv_adapter),
                  "--context-tokens", str(budget.kv_context), "--per-position", "2" if args.quick else "8",
                  "--out", str(args.out / "kv_retrieval"), *model))  # fmt: skip
    evaluated = args.out / "reproduce.evaluated.json"
    plan = evaluation_plan(args, budget, data_dir)
    if _read(evaluated) != plan:
        _evaluate_served(args, steps, budget, data_dir)
        evaluated.write_text(json.dumps(plan))
    return steps


def evaluation_plan(args: argparse.Namespace, budget: Budget, data_dir: Path) -> dict[str, Any]:
    """What the served evaluation depends on: the same plan again means its outputs are current."""
    adapters = data_dir / "adapters"
    return {
        "budget": repr(budget),
        "model": str(args.model),
        "serve_args": args.serve_args,
        "adapters": {a.name: (adapters / a.name / "adapter_config.json").stat().st_mtime for a in ADAPTERS},
    }


def _evaluate_served(args: argparse.Namespace, steps: Steps, budget: Budget, data_dir: Path) -> None:
    """position, val and collection against one server holding the collection and every adapter."""
    import httpx

    from finetune.adapters import load
    from lcrag import local_server

    serve = ["--model", str(args.model)] if args.model else []
    serve += ["--data-dir", str(data_dir), "--enable-lora", *args.serve_args]
    with local_server.serving(None, serve, args.out / "logs" / "server.log") as url:
        with httpx.Client(base_url=url, timeout=120) as http:
            for adapter in ADAPTERS:
                load(http, data_dir / "adapters", adapter.name)
        common = [
            "--base-url",
            url,
            *(["--model", str(args.model)] if args.model else []),
            *budget.suite_flags,
        ]
        kv, in2, multidoc, multidoc_ca = (a.name for a in ADAPTERS)
        steps.run("position", suite("position", *common, "--models", "base", kv, in2,
                                    "--out", str(args.out / "position")))  # fmt: skip
        steps.run("val", suite("val", *common, "--models", "base", in2, "--out", str(args.out / "val")))
        for model in ("base", multidoc, multidoc_ca):
            adapter = [] if model == "base" else ["--adapter", model]
            flags = [*common, *adapter, "--top-k", "5", "--kv", "kvzip-0.75", "kvzip-0.875",
                     "--kinds", "cloze", "quote", "--out", str(args.out / f"collection-{model}")]  # fmt: skip
            steps.run(f"collection-{model}", suite("collection", COLLECTION, *flags))


def findings(out: Path) -> list[str]:
    """One line per paper, from the suites' JSON (what report.md leads with)."""
    lines = []
    kv = _read(out / "kv_retrieval" / "finetune_kv_retrieval.json")
    position = _read(out / "position" / "position.json")
    if kv and position:
        gaps = {_role(row["model"]): row for row in position["summary"] if row["config"] == "none"}
        base, adapter = gaps.get("base"), gaps.get(ADAPTERS[0].name)
        before, after = kv["table"]["base"], kv["table"]["adapter"]
        lines.append(
            f"(a) kv_retrieval: kv accuracy {before['kv all']:.0f} -> {after['kv all']:.0f} %, "
            f"short questions {before['short']:.0f} -> {after['short']:.0f} %"
            + (
                f"; position gap (max - min) {base['gap']:.1f} -> {adapter['gap']:.1f} points, average "
                f"{base['average']:.1f} -> {adapter['average']:.1f} %."
                if base and adapter
                else "."
            )
        )
    val = _read(out / "val" / "val.json")
    if val:
        by_model: dict[str, list[dict[str, Any]]] = {}
        for row in val["summary"]:
            by_model.setdefault(_role(row["model"]), []).append(row)
        described = [
            f"{model}: average {sum(r['average'] for r in rows) / len(rows):.1f}, gap "
            f"{sum(r['gap'] for r in rows) / len(rows):.1f}"
            for model, rows in by_model.items()
        ]
        lines.append("(b) in2 on VaL (mean over tasks): " + "; ".join(described) + ".")
    cells = []
    for model in ("base", ADAPTERS[2].name, ADAPTERS[3].name):
        collection = _read(out / f"collection-{model}" / "collection.json")
        if collection:
            scores = {r["mode"]: r["substring"] for r in collection["summary"] if r["dataset"] == "cloze"}
            cells.append(f"{model}: " + ", ".join(f"{mode} {value:.0f}" for mode, value in scores.items()))
    if cells:
        lines.append("(c) held-out cloze accuracy % by mode — " + "; ".join(cells) + ".")
    return lines


def write_report(out: Path, steps: Steps, budget: Budget) -> Path:
    """report.md, and reproduce.steps.json: each step's latest time and command (this run's, else earlier)."""
    earlier = _read(out / "reproduce.steps.json") or {"times_s": {}, "commands": {}}
    times, commands = {**earlier["times_s"], **steps.times}, {**earlier["commands"], **steps.commands}
    sections = [
        "# lcrag eval reproduce",
        f"`{' '.join(['lcrag eval reproduce', *sys.argv[1:]])}` — budget: {budget}",
        "## Findings",
        *(f"- {line}" for line in findings(out)),
        "## Adapters (from their cards)",
        *adapter_table(out / "data" / "adapters"),
        "## Steps (wall time of each one's last run on this machine)",
        "| step | seconds | command |",
        "|---|---:|---|",
        *(f"| {name} | {times[name]:.0f} | `{commands[name]}` |" for name in times),
    ]
    for title, folder, stem in [
        ("(a) kv_retrieval: accuracy by gold position, short questions", "kv_retrieval",
         "finetune_kv_retrieval"),
        ("(a, b) Lost in the middle: base vs adapters", "position", "position"),
        ("(b) VaL probing: base vs in2", "val", "val"),
        *[(f"(c) Held-out collection questions: {m}", f"collection-{m}", "collection")
          for m in ("base", ADAPTERS[2].name, ADAPTERS[3].name)],
    ]:  # fmt: skip
        table = out / folder / f"{stem}.md"
        if table.is_file():
            sections += [f"## {title}", table.read_text().strip()]
            if (out / folder / f"{stem}.png").is_file():
                sections.append(f"![{stem}]({folder}/{stem}.png)")
    path = out / "report.md"
    path.write_text("\n\n".join(sections) + "\n")
    (out / "reproduce.steps.json").write_text(json.dumps({"times_s": times, "commands": commands}))
    return path


def adapter_table(adapters_dir: Path) -> list[str]:
    """One Markdown row per trained adapter: recipe, options, steps, training speed and loss."""
    from finetune.adapters import local_adapters

    rows = ["| adapter | recipe | compression | steps | examples x tokens | tokens/s | loss first -> last |",
            "|---|---|---|---:|---|---:|---|"]  # fmt: skip
    for adapter in local_adapters(adapters_dir):
        card, options = adapter.card, adapter.card.get("recipe_options", {})
        size = f"{options.get('examples')} x {options.get('context_tokens')}"
        loss = f"{card.get('loss_first', math.nan):.3f} -> {card.get('loss_last', math.nan):.3f}"
        cells = [adapter.name, card.get("recipe"), card.get("compression") or "-", card.get("steps"), size,
                 card.get("train_tokens_per_s"), loss]  # fmt: skip
        rows.append("| " + " | ".join(str(cell) for cell in cells) + " |")
    return ["\n".join(rows)]


def _newer(path: Path, than: Path) -> bool:
    """Whether `path` exists and was written after `than` (a result of the adapter now on disk)."""
    return path.is_file() and path.stat().st_mtime > than.stat().st_mtime


def _role(model: str) -> str:
    """An adapter's name, or "base" for the served base model (the suites report it by its name)."""
    return model if model in {a.name for a in ADAPTERS} else "base"


def _read(path: Path) -> Any:
    return json.loads(path.read_text()) if path.is_file() else None


def main() -> None:
    from evals.common import eval_parser

    parser = eval_parser(__doc__)
    parser.add_argument("--quick", action="store_true", help="A few training steps; each suite's --quick.")
    parser.add_argument("--context-tokens", type=int, default=6000, help="Tokens of the training collection.")
    parser.add_argument("--steps", type=int, default=None, help="Training steps per adapter (overrides).")
    parser.add_argument("--train-context", type=int, default=None, help="Tokens per in2/multidoc example.")
    parser.add_argument(
        "--serve-args", default="", help="Extra `lcrag serve` flags for the evaluation server (one string)."
    )
    args = parser.parse_args()
    args.serve_args = re.split(r"\s+", args.serve_args.strip()) if args.serve_args.strip() else []
    args.out.mkdir(parents=True, exist_ok=True)
    steps = run_all(args)
    path = write_report(args.out, steps, budget_of(args))
    print(path.read_text())


if __name__ == "__main__":
    main()
