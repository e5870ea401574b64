"""Model speed at tensor-parallel size 1 and 2 (`bench.model_speed` against each server, one after the
other): a random model of SmolLM2-135M's shape but with 8 heads and 4 KV heads, since the bundled model's
9 heads and 3 KV heads do not split over two ranks. KV eviction is on, as `lcrag serve` runs by default.

    python -m bench.tp_speed                      # ~8 minutes on 2 cores
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

from bench.common import doc_parser
from bench.models import save_tiny_llama
from lcrag import local_server
from lcrag.default_model import model_folder

SMOLLM2_SHAPED = dict(
    hidden_size=576,
    intermediate_size=1536,
    num_hidden_layers=30,
    num_attention_heads=8,
    num_key_value_heads=4,
    max_position_embeddings=8192,
    tie_word_embeddings=True,
)


def main() -> None:
    parser = doc_parser(__doc__)
    parser.add_argument("--sizes", nargs="+", default=["1", "2"], help="Tensor-parallel sizes, in turn.")
    parser.add_argument("--prompt-tokens", default="2048")
    parser.add_argument("--decode-tokens", default="128")
    parser.add_argument("--repeats", default="5")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="lcrag-tp-speed-"))
    model = save_tiny_llama(work / "model", model_folder(), **SMOLLM2_SHAPED)
    for size in args.sizes:
        data = work / f"tp{size}"
        data.mkdir()
        serve = ["--model", str(model), "--max-model-len", "4096", "--kv-cache-gb", "2",
                 "--tensor-parallel-size", size, "--data-dir", str(data)]  # fmt: skip
        process, url = local_server.start(serve, data / "server.log")
        try:
            print(f"--- tensor-parallel-size {size}", flush=True)
            sizes = ["--prompt-tokens", args.prompt_tokens, "--decode-tokens", args.decode_tokens]
            speed = [sys.executable, "-m", "bench.model_speed", "--base-url", url, *sizes]
            subprocess.run([*speed, "--repeats", args.repeats], check=True)
        finally:
            local_server.stop(process)


if __name__ == "__main__":
    main()
