"""`--context-extension yarn:FACTOR`: the vLLM overrides it stands for, and clear errors for bad values."""

import json
from pathlib import Path

import pytest

from lcrag.context_extension import ContextExtension, ContextExtensionError, extension_args

SMOLLM2 = {
    "max_position_embeddings": 8192,
    "rope_parameters": {"rope_theta": 100000.0, "rope_type": "default"},
}


def test_yarn_keeps_the_models_rope_base_and_scales_its_window() -> None:
    extension = ContextExtension.parse("yarn:2")
    assert extension.overrides(SMOLLM2) == {
        "rope_parameters": {
            "rope_type": "yarn",
            "rope_theta": 100000.0,
            "factor": 2.0,
            "original_max_position_embeddings": 8192,
        },
        "max_position_embeddings": 16384,
    }
    assert ContextExtension.parse(" yarn:4 ").window(SMOLLM2) == 32768


def test_the_flags_for_a_model_folder_raise_the_context_length_too(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"max_position_embeddings": 4096, "rope_theta": 5e5}))
    flags = extension_args("yarn:1.5", tmp_path)
    assert flags[0] == "--hf-overrides" and flags[2:] == ["--max-model-len", "6144"]
    assert json.loads(flags[1])["rope_parameters"]["rope_theta"] == 5e5
    assert extension_args("yarn:1.5", tmp_path, max_model_len=5000)[2:] == []  # the asked length stands


@pytest.mark.parametrize("spec", ["yarn", "yarn:1", "yarn:0.5", "yarn:32", "ntk:2", "yarn:two"])
def test_bad_values_say_what_to_pass(spec: str) -> None:
    with pytest.raises(ContextExtensionError, match=r"expected yarn:FACTOR with 1 < FACTOR <= 16"):
        ContextExtension.parse(spec)


def test_a_model_that_already_scales_rope_is_refused() -> None:
    llama31 = {"max_position_embeddings": 131072, "rope_parameters": {"rope_type": "llama3", "factor": 8.0}}
    with pytest.raises(ContextExtensionError, match="already scales RoPE \\(llama3\\)"):
        ContextExtension.parse("yarn:2").overrides(llama31)


def test_an_extended_model_folder_links_the_weights_and_scales_the_config(tmp_path: Path) -> None:
    from lcrag.context_extension import prepare_extended_model
    from lcrag.model_cache import cached_models

    base = tmp_path / "smollm2-135m-instruct"
    base.mkdir()
    (base / "config.json").write_text(json.dumps({**SMOLLM2, "model_type": "llama"}))
    (base / "model.safetensors").write_bytes(b"weights")
    extended = prepare_extended_model(base, 16384)
    assert extended.name == "smollm2-135m-instruct-16k"
    assert (extended / "model.safetensors").stat().st_ino == (base / "model.safetensors").stat().st_ino
    config = json.loads((extended / "config.json").read_text())
    assert config["max_position_embeddings"] == 16384 and config["rope_parameters"]["factor"] == 2.0
    assert prepare_extended_model(base, 16384) == extended  # already there
    assert [m.name for m in cached_models(tmp_path)] == [base.name, extended.name]
    with pytest.raises(ContextExtensionError, match=r"pass a multiple of it, e\.g\. 16384 or 32768"):
        prepare_extended_model(base, 12000)
