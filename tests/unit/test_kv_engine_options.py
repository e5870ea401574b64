"""How a request's eviction travels to the engine (`extra_args`), and the vLLM version guard."""

import pytest
import torch

from compression.policies.attention import SnapKV
from compression.registry import PolicyError
from compression.vllm_integration.options import (
    from_extra_args,
    pass_extra_args,
    pass_from_extra_args,
    to_extra_args,
)
from compression.vllm_integration.version import UnsupportedEngineError, check_vllm_version


def test_extra_args_round_trip_with_options() -> None:
    args = to_extra_args("snapkv", 0.75, {"window": 16, "kernel": None})
    assert all(isinstance(value, str | float) for value in args.values())  # vllm_xargs values are flat
    eviction = from_extra_args(args)
    assert eviction is not None and eviction.policy == SnapKV(window=16) and eviction.ratio == 0.75
    assert eviction.compressed_length(1000) == 1000 and eviction.context is None


def test_a_context_cache_request_names_its_context_and_needs_a_query_agnostic_policy() -> None:
    eviction = from_extra_args(to_extra_args("kvzip", 0.75, {"chunk": 4}, context=300, label="docs"))
    assert eviction is not None and eviction.context == 300 and eviction.label == "docs"
    assert eviction.compressed_length(1000) == 300 and eviction.policy.chunk == 4
    with pytest.raises(ValueError, match="'snapkv' scores with the question's attention"):
        from_extra_args(to_extra_args("snapkv", 0.75, context=300))
    with pytest.raises(ValueError, match="positive token count"):
        from_extra_args({**to_extra_args("knorm", 0.5), "lcrag_kv_cache_context": 0})


def test_a_reconstruction_pass_is_no_eviction_and_names_its_span() -> None:
    args = pass_extra_args("kvzip", {"repeat": 64}, context=200, span=(64, 128))
    assert from_extra_args(args) is None
    passing = pass_from_extra_args(args)
    assert passing is not None and passing.context == 200 and passing.span == (64, 128)
    assert passing.policy.repeat == 64
    with pytest.raises(ValueError, match="not inside the 200-token context"):
        pass_from_extra_args(pass_extra_args("kvzip", None, context=200, span=(150, 250)))


@pytest.mark.parametrize(
    "args", [None, {}, {"other": 1}, to_extra_args("none", 0.5), to_extra_args("snapkv", 0.0)]
)
def test_requests_that_evict_nothing_take_the_stock_path(args: dict | None) -> None:
    assert from_extra_args(args) is None


@pytest.mark.parametrize(
    ("args", "error", "phrase"),
    [
        (to_extra_args("snapkv", 1.0), ValueError, "[0, 1)"),
        (to_extra_args("snapkv", -0.1), ValueError, "[0, 1)"),
        (to_extra_args("nope", 0.5), PolicyError, "Unknown KV policy 'nope'"),
        (to_extra_args("knorm", 0.5, {"window": 4}), PolicyError, "no option window"),
    ],
)
def test_bad_settings_are_refused_with_a_reason(args: dict, error: type[Exception], phrase: str) -> None:
    with pytest.raises(error, match=phrase.replace("[", r"\[").replace(")", r"\)")):
        from_extra_args(args)


def test_other_vllm_versions_are_refused_with_what_to_do() -> None:
    check_vllm_version("0.32.0+cpu")
    with pytest.raises(
        UnsupportedEngineError, match=r"supports vLLM 0\.32\.0 only; found 0\.33\.1.*make setup"
    ):
        check_vllm_version("0.33.1")


def test_unreadable_cache_layouts_are_refused_with_what_to_do() -> None:
    from compression.vllm_integration.cache_io import READABLE_ISAS
    from compression.vllm_integration.version import check_readable_cache

    check_readable_cache(
        {"layers.0.attn": "vec", "layers.1.attn": "vec16", "layers.2.attn": "amx"}, READABLE_ISAS
    )
    with pytest.raises(
        UnsupportedEngineError, match=r"layout neon \(it reads vec, vec16, amx\).*no-kv-eviction"
    ):
        check_readable_cache({"layers.0.attn": "vec", "layers.1.attn": "neon"}, READABLE_ISAS)
    with pytest.raises(UnsupportedEngineError, match="layout None"):  # a layer vLLM never gave a layout
        check_readable_cache({"layers.0.attn": None}, READABLE_ISAS)


def test_engine_configurations_the_eviction_cannot_serve_are_refused_with_what_to_change() -> None:
    from types import SimpleNamespace

    from vllm.v1.kv_cache_interface import FullAttentionSpec

    from compression.vllm_integration.version import check_supported_config

    spec = FullAttentionSpec(block_size=32, num_kv_heads=2, head_size=64, dtype=torch.float32)
    kv_cache_config = SimpleNamespace(kv_cache_groups=[SimpleNamespace(kv_cache_spec=spec)])

    def config(cache_dtype: str, async_scheduling: bool = False) -> SimpleNamespace:
        return SimpleNamespace(
            speculative_config=None,
            kv_transfer_config=None,
            scheduler_config=SimpleNamespace(async_scheduling=async_scheduling),
            cache_config=SimpleNamespace(cache_dtype=cache_dtype),
        )

    check_supported_config(config("auto"), kv_cache_config)
    with pytest.raises(UnsupportedEngineError, match=r"--kv-cache-dtype auto\), not fp8_e4m3"):
        check_supported_config(config("fp8_e4m3"), kv_cache_config)
    with pytest.raises(UnsupportedEngineError, match="async scheduling must be off"):
        check_supported_config(config("auto", async_scheduling=True), kv_cache_config)


def test_a_tensor_parallel_size_the_kv_heads_do_not_split_over_is_refused_before_the_engine_starts(
    tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The bundled model's shape (9 query heads, 3 KV heads): `lcrag serve` stops in seconds with the sizes
    that work, instead of a worker process failing after the engine has started."""
    import json
    import os

    from typer.testing import CliRunner

    from lcrag.cli import app

    model = tmp_path / "model"
    model.mkdir()
    shape = {"architectures": ["LlamaForCausalLM"], "num_attention_heads": 9, "num_key_value_heads": 3}
    (model / "config.json").write_text(json.dumps(shape))
    monkeypatch.setattr(os, "environ", dict(os.environ))  # the command sets vLLM's environment
    serve = ["serve", "--model", str(model), "--data-dir", str(tmp_path / "data")]
    refused = CliRunner().invoke(app, [*serve, "--tensor-parallel-size", "2"])
    assert refused.exit_code == 1, refused.output
    assert "3 KV heads split evenly over --tensor-parallel-size 2" in refused.output
    assert "choose a size that divides 3" in refused.output and "--no-kv-eviction" in refused.output

    from argparse import Namespace

    from compression.vllm_integration.version import check_kv_heads_split
    from server.app import check_eviction_parallelism

    without_eviction = Namespace(model=str(model), scheduler_cls=None, tensor_parallel_size=2)
    check_eviction_parallelism(without_eviction)  # stock vLLM may replicate heads
    check_kv_heads_split(3, 3)  # one head per rank
    check_kv_heads_split(3, 1)
    with pytest.raises(UnsupportedEngineError, match="4 KV heads split evenly over --tensor-parallel-size 3"):
        check_kv_heads_split(4, 3)
