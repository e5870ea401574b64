"""How a request's eviction travels to the engine (`extra_args`), and the vLLM version guard."""

import pytest
import torch

from compression.policies.attention import SnapKV
from compression.registry import PolicyError
from compression.spec import TASK_KEY, CacheKey, KVSpec, KVTask
from compression.vllm_integration.version import UnsupportedEngineError, check_vllm_version


def spec(policy: str, ratio: float, **options: object) -> KVSpec:
    return KVSpec(policy=policy, ratio=ratio, options=options or None)


def test_extra_args_round_trip_with_options() -> None:
    args = spec("snapkv", 0.75, window=16).task().extra_args()
    assert list(args) == [TASK_KEY] and isinstance(args[TASK_KEY], str)  # vllm_xargs values are flat
    eviction = KVTask.from_extra_args(args)
    assert eviction is not None and eviction.policy == SnapKV(window=16) and eviction.spec.ratio == 0.75
    assert eviction.compressed_length(1000) == 1000 and eviction.context is None


def test_a_context_cache_request_names_its_context_and_needs_a_query_agnostic_policy() -> None:
    eviction = KVTask.from_extra_args(spec("kvzip", 0.75, chunk=4).task(300, "docs").extra_args())
    assert eviction is not None and eviction.context == 300 and eviction.label == "docs"
    assert eviction.compressed_length(1000) == 300 and eviction.policy.chunk == 4  # type: ignore[attr-defined]
    assert eviction.compressed_length(200) == 200  # a prompt shorter than the context named
    with pytest.raises(ValueError, match="'snapkv' scores with the question's attention"):
        spec("snapkv", 0.75).task(300)
    with pytest.raises(ValueError, match="positive token count"):
        spec("knorm", 0.5).task(0)
    forged = {TASK_KEY: '{"policy": "snapkv", "ratio": 0.5, "context": 300}'}  # from a client's vllm_xargs
    with pytest.raises(ValueError, match="query-agnostic"):
        KVTask.from_extra_args(forged)


def test_a_reconstruction_pass_names_its_span_inside_its_context() -> None:
    task = KVTask.from_extra_args(spec("kvzip", 0.0, repeat=64).scoring_pass(200, (64, 128)).extra_args())
    assert task is not None and task.is_pass and task.context == 200 and task.span == (64, 128)
    assert task.policy.repeat == 64  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="not inside the 200-token context"):
        spec("kvzip", 0.0).scoring_pass(200, (150, 250))


@pytest.mark.parametrize(
    "args",
    [None, {}, {"other": 1}, spec("none", 0.5).task().extra_args(), spec("snapkv", 0.0).task().extra_args()],
)
def test_requests_that_evict_nothing_take_the_stock_path(args: dict | None) -> None:
    assert KVTask.from_extra_args(args) is None


@pytest.mark.parametrize(
    ("value", "error", "phrase"),
    [
        ('{"policy": "snapkv", "ratio": 1.0}', ValueError, "less than 1"),
        ('{"policy": "snapkv", "ratio": -0.1}', ValueError, "greater than or equal to 0"),
        ('{"policy": "nope", "ratio": 0.5}', PolicyError, "Unknown KV policy 'nope'"),
        ('{"policy": "knorm", "ratio": 0.5, "options": {"window": 4}}', PolicyError, "no option window"),
        ("not json", ValueError, "malformed lcrag_kv_task"),
        ('{"ratio": 0.5}', ValueError, "malformed lcrag_kv_task"),
    ],
)
def test_bad_tasks_are_refused_with_a_reason(value: str, error: type[Exception], phrase: str) -> None:
    with pytest.raises(error, match=phrase):
        KVTask.from_extra_args({TASK_KEY: value})


@pytest.mark.parametrize(
    ("text", "policy", "ratio"),
    [
        ("snapkv-0.75", "snapkv", 0.75),
        ("snapkv:0.75", "snapkv", 0.75),
        ("expected_attention-0.5", "expected_attention", 0.5),
    ],
)
def test_spec_strings_have_one_spelling_and_the_old_one_is_still_read(
    text: str, policy: str, ratio: float
) -> None:
    parsed = KVSpec.parse(text)
    assert (parsed.policy, parsed.ratio) == (policy, ratio)
    assert str(parsed) == f"{policy}-{ratio:g}" and KVSpec.parse(str(parsed)) == parsed


@pytest.mark.parametrize(
    ("text", "spelled"),
    [
        ("kvzip[chunk=8,layers=shared]-0.875", "kvzip[chunk=8,layers=shared]-0.875"),
        ("kvzip[layers=shared,chunk=8]:0.875", "kvzip[chunk=8,layers=shared]-0.875"),
        ("random[seed=-1]:0.5", "random[seed=-1]-0.5"),
        ("snapkv-0.123456789", "snapkv-0.123456789"),  # exact: two ratios never share a spelling
    ],
)
def test_spec_options_are_written_in_brackets(text: str, spelled: str) -> None:
    parsed = KVSpec.parse(text)
    assert str(parsed) == spelled and KVSpec.parse(spelled) == parsed
    assert KVSpec.parse("kvzip[chunk=8,layers=shared]-0.5").all_options() == {"chunk": 8, "layers": "shared"}


@pytest.mark.parametrize(
    ("text", "phrase"),
    [
        ("snapkv", "e.g. 'snapkv-0.75'"),
        ("snapkv-1.5", "in \\[0, 1\\)"),
        ("nope-0.5", "Unknown KV policy 'nope'"),
    ],
)
def test_bad_spec_strings_say_what_to_write(text: str, phrase: str) -> None:
    with pytest.raises(ValueError, match=phrase):
        KVSpec.parse(text)


def test_a_spec_builds_its_policy_once_and_keys_caches_by_every_option() -> None:
    kvzip = KVSpec.parse("kvzip-0.5")
    assert kvzip.policy_object is kvzip.policy_object
    assert kvzip.shares_context and kvzip.policy_object.needs_reconstruction
    assert (
        not KVSpec.parse("snapkv-0.5").shares_context
        and not KVSpec(policy="kvzip", ratio=0.5, cache=False).shares_context
    )
    context = list(range(100))
    key = CacheKey.of(kvzip, context, lora=2)
    assert key == CacheKey.of(
        KVSpec(policy="kvzip", ratio=0.5, sinks=4), context, lora=2
    )  # defaults spelled out
    assert key != CacheKey.of(KVSpec(policy="kvzip", ratio=0.5, sinks=8), context, lora=2)
    assert key != CacheKey.of(kvzip, context[:-1], lora=2) and key != CacheKey.of(kvzip, context, lora=0)
    listed = {"lora": 2, "policy": key.policy, "ratio": 0.5, "tokens_before": 100, "digest": key.digest}
    assert CacheKey.of_listing(listed) == key and key.scores_key() == [2, key.policy, key.digest]


def test_other_vllm_versions_are_refused_with_what_to_do() -> None:
    check_vllm_version("0.32.0+cpu")
    with pytest.raises(
        UnsupportedEngineError, match=r"supports vLLM 0\.32\.0 only; found 0\.33\.1.*make setup"
    ):
        check_vllm_version("0.33.1")


def test_unreadable_cache_layouts_are_refused_with_what_to_do() -> None:
    from compression.vllm_integration.cpu.cache_layout import READABLE_ISAS
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
