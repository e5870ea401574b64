"""`lcrag finetune` refuses bad input before loading anything, with a message that says what to do."""

from pathlib import Path

import pytest
from typer.testing import CliRunner

from lcrag.cli import app


@pytest.mark.parametrize(
    ("arguments", "phrase"),
    [
        (["--recipe", "nope", "--out", "a"], "Unknown recipe 'nope'; available: kv_retrieval, in2, multidoc"),
        (["--recipe", "kv_retrieval", "--out", "a", "--method", "ppo"], "Unknown method 'ppo'"),
        (["--recipe", "kv_retrieval", "--out", "a", "--method", "grpo"], "use --recipe multidoc"),
        (["--recipe", "kv_retrieval", "--out", "a", "--compression", "snapkv"], "POLICY-RATIO"),
        (["--recipe", "kv_retrieval", "--out", "a", "--compression", "nope:0.5"], "Unknown KV policy 'nope'"),
        (["--recipe", "kv_retrieval", "--out", "a", "--precision", "fp16"], "Unknown precision 'fp16'"),
        (["--recipe", "multidoc", "--out", "a"], "pass --collection"),
        (["--recipe", "multidoc", "--out", "a", "--target", "quotes"], "Unknown --target 'quotes'"),
        (
            ["--recipe", "kv_retrieval", "--out", "a", "--steps", "0"],
            "--steps and --examples must be at least 1",
        ),
        (["--recipe", "in2", "--out", "a"], "pass --collection"),
        (["--recipe", "in2", "--out", "a", "--collection", "no-such"], "no-such"),
        (["--recipe", "kv_retrieval", "--out", "taken"], "already exists"),
        (["--recipe", "kv_retrieval", "--out", "taken", "--resume"], "already exists"),
        (["--recipe", "kv_retrieval", "--out", "halfway"], "continue it with --resume"),
        (["--recipe", "kv_retrieval", "--out", "new", "--resume"], "Nothing to resume"),
        (["--recipe", "kv_retrieval", "--out", "halfway", "--resume", "--steps", "7"], "these differ: steps"),
    ],
)
def test_bad_finetune_requests_fail_with_the_reason(
    arguments: list[str], phrase: str, tmp_path: Path, default_model_path: Path
) -> None:
    import json

    from finetune.run import RUN_FILE, FinetuneRequest

    (tmp_path / "adapters" / "taken").mkdir(parents=True)
    (tmp_path / "adapters" / "taken" / "adapter_config.json").write_text("{}")
    halfway = tmp_path / "adapters" / "halfway"
    (halfway / "checkpoints" / "checkpoint-5").mkdir(parents=True)
    (halfway / "checkpoints" / "checkpoint-5" / "trainer_state.json").write_text("{}")  # a finished save
    saved = FinetuneRequest("kv_retrieval", default_model_path, halfway, steps=100).run_settings()
    (halfway / RUN_FILE).write_text(json.dumps(saved))
    result = CliRunner().invoke(
        app, ["finetune", *arguments, "--data-dir", str(tmp_path), "--model", str(default_model_path)]
    )
    assert result.exit_code == 1, result.output
    assert phrase in result.output


@pytest.mark.parametrize(
    ("recipe", "phrase"), [("in2", "documents are empty"), ("multidoc", "at least 3 chunks")]
)
def test_an_empty_collection_is_refused_with_the_reason(
    recipe: str, phrase: str, tmp_path: Path, default_model_path: Path
) -> None:
    from rag.store import Store

    Store.open(path=str(tmp_path / "chroma")).create_collection("empty")
    arguments = ["finetune", "--recipe", recipe, "--collection", "empty", "--out", "a"]
    result = CliRunner().invoke(
        app, [*arguments, "--data-dir", str(tmp_path), "--model", str(default_model_path)]
    )
    assert result.exit_code == 1, result.output
    assert phrase in result.output and not (tmp_path / "adapters" / "a").exists()


@pytest.mark.parametrize(
    ("requested", "on_gpu", "amx", "chosen"),
    [
        ("auto", True, False, "bf16"),
        ("auto", False, True, "bf16"),
        ("auto", False, False, "fp32"),
        ("fp32", True, True, "fp32"),
        ("bf16", False, False, "bf16"),
    ],
)
def test_auto_precision_trains_in_bf16_only_where_the_hardware_multiplies_it(
    requested: str, on_gpu: bool, amx: bool, chosen: str
) -> None:
    from finetune.train import precision_of

    assert precision_of(requested, on_gpu, amx) == chosen
