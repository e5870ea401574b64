"""How a request's eviction travels to the engine (`extra_args`), and the vLLM version guard."""

import pytest

from compression.policies.attention import SnapKV
from compression.registry import PolicyError
from compression.vllm_integration.options import from_extra_args, to_extra_args
from compression.vllm_integration.version import UnsupportedEngineError, check_vllm_version


def test_extra_args_round_trip_with_options() -> None:
    args = to_extra_args("snapkv", 0.75, {"window": 16, "kernel": None})
    assert all(isinstance(value, str | float) for value in args.values())  # vllm_xargs values are flat
    eviction = from_extra_args(args)
    assert eviction is not None and eviction.policy == SnapKV(window=16) and eviction.ratio == 0.75
    assert eviction.kept_prompt_tokens(1000) == 250


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

    check_readable_cache({"layers.0.attn": "vec", "layers.1.attn": "vec16"}, READABLE_ISAS)
    with pytest.raises(UnsupportedEngineError, match=r"layout amx \(it reads vec, vec16\).*--dtype float32"):
        check_readable_cache({"layers.0.attn": "vec", "layers.1.attn": "amx"}, READABLE_ISAS)
    with pytest.raises(UnsupportedEngineError, match="layout None"):  # a layer vLLM never gave a layout
        check_readable_cache({"layers.0.attn": None}, READABLE_ISAS)
