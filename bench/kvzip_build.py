"""What a kvzip collection cache costs to build, by what each repeat query's softmax runs over: the span
(`attend=span`), or the whole context (`attend=context`, the default) with its normaliser from torch's fused
attention kernel or from blocks of explicit logits (its fallback where the kernel is missing). All three in
one in-process engine and one run, alternating, each build on its own context (so each pays its own
prefill, as a new collection does).

Reported per variant: the median build seconds (reconstruction passes + compression) and the ratio to
`attend=span`; the build is also timed without passes (`knorm`, the same prefill and compression) to show
what the passes themselves cost.

    python -m bench.kvzip_build --context-tokens 4000 --builds 3 --out out/bench   # ~10 min on 2 cores
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from bench.collection_cache import make_collections
from bench.common import engine_parser
from compression.policies import reconstruction
from compression.spec import KVSpec
from compression.vllm_integration.offline import build_context_cache, offline_engine

# name -> (policy, options, fused kernel)
VARIANTS: dict[str, tuple[str, dict[str, Any], bool]] = {
    "knorm (no passes)": ("knorm", {}, True),
    "kvzip attend=span": ("kvzip", {"attend": "span"}, True),
    "kvzip attend=context, fused normaliser": ("kvzip", {"attend": "context"}, True),
    "kvzip attend=context, explicit logits": ("kvzip", {"attend": "context"}, False),
}
BASELINE = "kvzip attend=span"


def timed_build(llm: Any, tokenizer: Any, context: list[int], variant: str, ratio: float) -> float:
    policy, options, fused = VARIANTS[variant]
    reconstruction.FUSED_LOG_SUM_EXP = fused  # the engine runs in this process
    started = time.perf_counter()
    build_context_cache(llm, tokenizer, context, KVSpec(policy=policy, ratio=ratio, options=options), variant)
    return time.perf_counter() - started


def main() -> None:
    parser = engine_parser(__doc__)
    parser.add_argument("--context-tokens", type=int, default=4000)
    parser.add_argument("--builds", type=int, default=3, help="Builds per variant (each on a new context).")
    parser.add_argument("--ratio", type=float, default=0.75)
    parser.add_argument("--out", type=Path, default=None, help="Folder for the JSON and Markdown results.")
    args = parser.parse_args()
    from transformers import AutoTokenizer

    from lcrag.default_model import model_folder

    model = model_folder(args.model)
    tokenizer = AutoTokenizer.from_pretrained(model)
    contexts = [
        c.context for c in make_collections(tokenizer, args.builds * len(VARIANTS), args.context_tokens)
    ]
    times: dict[str, list[float]] = {variant: [] for variant in VARIANTS}
    with offline_engine(model, kv_space_gb=2, max_model_len=8192) as llm:
        names = list(VARIANTS)
        for index, context in enumerate(contexts):  # variants alternate, so drift hits them alike
            variant = names[index % len(names)]
            times[variant].append(timed_build(llm, tokenizer, context, variant, args.ratio))
            print(f"{variant}: {len(context)} tokens built in {times[variant][-1]:.1f} s", flush=True)
    medians = {variant: statistics.median(values) for variant, values in times.items()}
    command = "python -m bench.kvzip_build " + " ".join(sys.argv[1:])
    rows = [
        f"| {variant} | {medians[variant]:.1f} | {medians[variant] / medians[BASELINE]:.2f}x | "
        + ", ".join(f"{t:.1f}" for t in values)
        + " |"
        for variant, values in times.items()
    ]
    report = "\n".join(
        [
            f"`{command}` ({len(contexts[0])}-token contexts, ratio {args.ratio})",
            "",
            f"| build | median s | vs {BASELINE} | each build s |",
            "|---|---:|---:|---|",
            *rows,
        ]
    )
    print("\n" + report)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "kvzip_build.md").write_text(report + "\n")
        (args.out / "kvzip_build.json").write_text(
            json.dumps({"command": command, "seconds": times}, indent=1)
        )


if __name__ == "__main__":
    main()
