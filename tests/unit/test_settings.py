"""Settings: defaults < LCRAG_* environment < flags, and one clear message per bad value."""

from pathlib import Path

import pytest
from typer.testing import CliRunner

from lcrag.cli import app
from lcrag.settings import SettingsError, load_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("LCRAG_"):
            monkeypatch.delenv(name)


def test_defaults_listen_on_localhost_8000_with_data_under_the_cache_dir() -> None:
    settings = load_settings()
    assert (settings.host, settings.port, settings.base_url) == ("127.0.0.1", 8000, "http://127.0.0.1:8000")
    assert settings.data_dir == Path("~/.cache/lcrag").expanduser()
    assert settings.models_dir == settings.data_dir / "models"
    assert settings.model is None and settings.api_key is None and settings.enable_lora is False


def test_environment_overrides_defaults(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LCRAG_PORT", "9001")
    monkeypatch.setenv("LCRAG_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("LCRAG_ENABLE_LORA", "true")
    monkeypatch.setenv("LCRAG_API_KEY", "s3cret")
    settings = load_settings()
    assert settings.port == 9001 and settings.data_dir == tmp_path and settings.enable_lora is True
    assert settings.api_key is not None and settings.api_key.get_secret_value() == "s3cret"


def test_flags_override_environment_and_none_means_not_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LCRAG_PORT", "9001")
    monkeypatch.setenv("LCRAG_HOST", "0.0.0.0")
    settings = load_settings(port=9100, host=None)
    assert settings.port == 9100 and settings.host == "0.0.0.0"


def test_empty_model_in_environment_means_the_default_model(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LCRAG_MODEL", "")
    assert load_settings().model is None


def test_bad_environment_value_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LCRAG_PORT", "eighty")
    with pytest.raises(SettingsError) as error:
        load_settings()
    assert str(error.value).startswith("Invalid setting 'port' from LCRAG_PORT:")
    assert "'eighty'" in str(error.value)


def test_bad_flag_value_names_the_flag_and_every_bad_setting() -> None:
    with pytest.raises(SettingsError) as error:
        load_settings(port=70000, kv_cache_gb=0)
    lines = str(error.value).splitlines()
    assert len(lines) == 2
    assert lines[0].startswith(
        "Invalid setting 'port' from --port: Input should be less than or equal to 65535"
    )
    assert lines[1].startswith("Invalid setting 'kv_cache_gb' from --kv-cache-gb:")


def test_api_key_value_is_never_echoed_in_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(SettingsError) as error:
        load_settings(api_key=12345)
    assert "12345" not in str(error.value)


def test_cli_reports_a_bad_setting_in_one_line_and_exits_2(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LCRAG_MAX_MODEL_LEN", "-5")
    result = CliRunner().invoke(app, ["serve"])
    assert result.exit_code == 2
    assert result.output.strip().startswith("Invalid setting 'max_model_len' from LCRAG_MAX_MODEL_LEN:")
    assert "Traceback" not in result.output


def test_embedder_must_be_a_model_folder(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match=r"Invalid setting 'embedder' from --embedder: .*no config.json"):
        load_settings(embedder=tmp_path)
    (tmp_path / "config.json").write_text("{}")
    assert load_settings(embedder=tmp_path).embedder == tmp_path


def test_chroma_url_must_be_an_http_url() -> None:
    with pytest.raises(SettingsError, match="Invalid setting 'chroma_url' from --chroma-url"):
        load_settings(chroma_url="localhost:8000")
    assert load_settings(chroma_url="http://127.0.0.1:8000").chroma_url == "http://127.0.0.1:8000"


def test_the_api_key_can_come_from_a_file_and_only_from_one_place(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    key_file = tmp_path / "key"
    key_file.write_text("s3cret-from-file\n")
    assert load_settings(api_key_file=str(key_file)).api_key.get_secret_value() == "s3cret-from-file"  # type: ignore[union-attr]
    monkeypatch.setenv("LCRAG_API_KEY_FILE", str(key_file))
    assert load_settings().api_key.get_secret_value() == "s3cret-from-file"  # type: ignore[union-attr]
    with pytest.raises(SettingsError, match="not both") as both:
        load_settings(api_key="other")
    assert "s3cret" not in str(both.value) and "other" not in str(both.value)
    monkeypatch.delenv("LCRAG_API_KEY_FILE")
    with pytest.raises(SettingsError, match="--api-key-file: Value error, no such file"):
        load_settings(api_key_file=str(tmp_path / "missing"))
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(SettingsError, match="is empty; write the key into it"):
        load_settings(api_key_file=str(tmp_path / "empty"))


def test_cpu_workers_get_equal_runs_of_cpus_only_where_vllm_cannot_bind_them() -> None:
    from server.app import cpu_thread_binding

    assert cpu_thread_binding(2, [0, 1], numa_nodes=1) == "0|1"
    assert cpu_thread_binding(2, [3, 0, 1, 2, 4], numa_nodes=1) == "0,1|2,3"  # equal runs, the rest unused
    assert cpu_thread_binding(2, list(range(8)), numa_nodes=2) is None  # one NUMA node each: vLLM's own
    assert cpu_thread_binding(1, [0, 1], numa_nodes=1) is None
    assert cpu_thread_binding(4, [0, 1], numa_nodes=1) is None  # too few CPUs: vLLM says why
