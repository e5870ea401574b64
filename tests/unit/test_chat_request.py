"""A generation request parsed once into vLLM's request model with the `lcrag` field; the model name merged
in before the field is checked; what a server without collections or eviction answers."""

from __future__ import annotations

import json

import pytest

from server.errors import ApiError, BadRequestError
from server.pipeline.pipeline import Pipeline
from server.pipeline.request import (
    LcragChatRequest,
    LcragCompletionRequest,
    parse_mode_spec,
    parse_request,
    resolve,
)

pytestmark = pytest.mark.anyio
SERVED = "served-model"


def chat(**fields: object) -> bytes:
    return json.dumps({"model": "m", "messages": [{"role": "user", "content": "Hi?"}], **fields}).encode()


def test_the_body_is_parsed_once_into_vllms_request_with_the_lcrag_field() -> None:
    request = parse_request(
        chat(lcrag={"kv": {"policy": "snapkv", "ratio": 0.5}}, max_tokens=7), LcragChatRequest
    )
    assert request.max_tokens == 7 and request.lcrag is not None and request.lcrag.kv is not None
    assert str(request.lcrag.kv) == "snapkv-0.5" and request.planned is None
    completion = parse_request(b'{"model": "m", "prompt": "hi"}', LcragCompletionRequest)
    assert completion.prompt == "hi" and completion.lcrag is None


@pytest.mark.parametrize(
    ("lcrag", "param", "phrase"),
    [
        ({"kv": {"ratio": 1.5}}, "lcrag.kv.ratio", "less than 1"),
        ({"kv": {"ratio": "lots"}}, "lcrag.kv.ratio", "valid number"),
        ({"mode": "fast"}, "lcrag.mode", "'rag', 'lc' or 'auto'"),
        ({"colection": "docs"}, "lcrag.colection", "Extra inputs are not permitted"),
        ({"kv": {"policy": "none", "windw": 8}}, "lcrag.kv.windw", "Extra inputs are not permitted"),
        ("snapkv", "lcrag", "valid"),
    ],
)
def test_a_bad_lcrag_field_is_a_400_naming_the_field(lcrag: object, param: str, phrase: str) -> None:
    with pytest.raises(BadRequestError) as raised:
        parse_request(chat(lcrag=lcrag), LcragChatRequest)
    assert raised.value.param == param and raised.value.status == 400
    assert param in raised.value.message and phrase in raised.value.message


def test_a_body_nested_too_deep_to_parse_is_a_400_not_a_crash() -> None:
    deep = b'{"model": "m", "messages": ' + b"[" * 20_000 + b"]" * 20_000 + b"}"
    with pytest.raises(BadRequestError) as raised:
        parse_request(deep, LcragChatRequest)
    assert raised.value.status == 400 and "recursion" in raised.value.message.lower()


def test_the_model_name_supplies_the_collection_before_the_field_is_checked() -> None:
    """`docs@rag` with `{"top_k": 3}`: the name names the collection the field's top_k needs."""
    request = parse_request(chat(model="docs@rag", lcrag={"top_k": 3}), LcragChatRequest)
    resolved, options = resolve(request, SERVED)
    assert resolved.model == SERVED and (options.collection, options.mode, options.top_k) == (
        "docs",
        "rag",
        3,
    )
    adapter, options = resolve(
        parse_request(chat(model="tuned/docs@lc:kvzip-0.75"), LcragChatRequest), SERVED
    )
    assert adapter.model == "tuned" and options.kv is not None and str(options.kv) == "kvzip-0.75"
    _, options = resolve(
        parse_request(chat(model="docs@lc", lcrag={"mode": "rag"}), LcragChatRequest), SERVED
    )
    assert options.mode == "rag"  # the field wins where both speak


@pytest.mark.parametrize(
    ("body", "param", "phrase"),
    [
        (chat(lcrag={"top_k": 3}), "lcrag.top_k", "'top_k' needs 'collection'"),
        (
            chat(lcrag={"kv": {"policy": "snap", "ratio": 0.5}}),
            "lcrag.kv",
            "Unknown KV policy 'snap'; available:",
        ),
        (
            chat(lcrag={"kv": {"policy": "knorm", "ratio": 0.5, "window": 8}}),
            "lcrag.kv",
            "has no option window",
        ),
        (
            chat(lcrag={"kv": {"policy": "snapkv", "ratio": 0.5, "cache": True}}),
            "lcrag.kv.cache",
            "query-agnostic",
        ),
        (chat(model="docs@lc:snapkv-2"), "model", "e.g. 'snapkv-0.75'"),
        (chat(model="x@rag"), "model", "3-63 characters"),
    ],
)
def test_what_the_request_asks_is_checked_as_a_whole(body: bytes, param: str, phrase: str) -> None:
    with pytest.raises(BadRequestError) as raised:
        resolve(parse_request(body, LcragChatRequest), SERVED)
    assert raised.value.param == param and phrase in raised.value.message


@pytest.mark.parametrize(
    ("lcrag", "param"),
    [({"collection": "docs"}, "lcrag.collection"), ({"kv": {"policy": "snapkv", "ratio": 0.5}}, "lcrag.kv")],
)
async def test_what_this_server_cannot_do_is_a_501_not_ignored(lcrag: dict, param: str) -> None:
    with pytest.raises(ApiError) as raised:
        await Pipeline().chat(parse_request(chat(lcrag=lcrag), LcragChatRequest))
    assert raised.value.status == 501 and raised.value.param == param


async def test_requests_that_ask_nothing_of_lcrag_pass_through() -> None:
    request = parse_request(chat(), LcragChatRequest)
    assert await Pipeline().chat(request) == (request, None)
    request = parse_request(chat(lcrag={"kv": {"policy": "none", "ratio": 0.0}}), LcragChatRequest)
    assert (await Pipeline().chat(request))[1] is None


def test_mode_specs_name_a_mode_and_maybe_a_kv_spec() -> None:
    assert parse_mode_spec("rag") == ("rag", None)
    mode, kv = parse_mode_spec("lc:snapkv-0.75")
    assert mode == "lc" and kv is not None and (kv.policy, kv.ratio) == ("snapkv", 0.75)
    with pytest.raises(ValueError, match="unknown mode 'fast'"):
        parse_mode_spec("fast")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
