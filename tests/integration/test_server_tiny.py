"""`lcrag serve` on a tiny random Llama: the OpenAI API works unchanged, bad input gets clear 4xx errors."""

import httpx
import openai
import pytest

from tests.conftest import RunningServer

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def client(tiny_server: RunningServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{tiny_server.base_url}/v1", api_key=tiny_server.api_key, max_retries=0)


def post(server: RunningServer, path: str, **kwargs: object) -> httpx.Response:
    headers = {**server.headers(), **kwargs.pop("headers", {})}  # type: ignore[dict-item]
    return httpx.post(f"{server.base_url}{path}", headers=headers, timeout=60, **kwargs)  # type: ignore[arg-type]


def test_models_lists_the_served_model_first(client: openai.OpenAI, tiny_server: RunningServer) -> None:
    assert client.models.list().data[0].id == tiny_server.model


def test_chat_completion(client: openai.OpenAI, tiny_server: RunningServer) -> None:
    reply = client.chat.completions.create(
        model=tiny_server.model, messages=[{"role": "user", "content": "Hello"}], max_tokens=8, temperature=0
    )
    assert reply.choices[0].message.role == "assistant"
    assert reply.usage is not None and reply.usage.completion_tokens == 8 and reply.usage.prompt_tokens > 5


def test_streamed_chat_completion_matches_the_unstreamed_one(
    client: openai.OpenAI, tiny_server: RunningServer
) -> None:
    request = {
        "model": tiny_server.model,
        "messages": [{"role": "user", "content": "Count"}],
        "max_tokens": 12,
        "temperature": 0,
    }
    whole = client.chat.completions.create(**request).choices[0].message.content
    stream = client.chat.completions.create(**request, stream=True)
    pieces = [chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices]
    assert len([p for p in pieces if p]) > 1
    assert "".join(pieces) == whole


def test_completion(client: openai.OpenAI, tiny_server: RunningServer) -> None:
    reply = client.completions.create(
        model=tiny_server.model, prompt="Once upon a time", max_tokens=5, temperature=0
    )
    assert reply.usage is not None and reply.usage.completion_tokens == 5
    assert isinstance(reply.choices[0].text, str)


def test_valid_lcrag_field_is_accepted_and_does_not_change_the_answer(
    client: openai.OpenAI, tiny_server: RunningServer
) -> None:
    request = {
        "model": tiny_server.model,
        "messages": [{"role": "user", "content": "Hi"}],
        "max_tokens": 6,
        "temperature": 0,
    }
    plain = client.chat.completions.create(**request).choices[0].message.content
    extended = client.chat.completions.create(**request, extra_body={"lcrag": {"kv": {"policy": "none"}}})
    assert extended.choices[0].message.content == plain


def test_bad_lcrag_field_is_a_400_naming_the_field(client: openai.OpenAI, tiny_server: RunningServer) -> None:
    with pytest.raises(openai.BadRequestError) as error:
        client.chat.completions.create(
            model=tiny_server.model,
            messages=[{"role": "user", "content": "Hi"}],
            extra_body={"lcrag": {"kv": {"policy": "none", "ratio": 2}}},
        )
    assert error.value.status_code == 400
    assert error.value.body["param"] == "lcrag.kv.ratio"  # type: ignore[index]
    assert "lcrag.kv.ratio" in error.value.body["message"]  # type: ignore[index]


def test_unknown_model_is_a_404_in_openai_shape(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as error:
        client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "Hi"}])
    body = error.value.body
    assert isinstance(body, dict) and {"message", "type", "param", "code"} <= body.keys()
    assert "no-such-model" in body["message"] and body["code"] == 404


def test_prompt_longer_than_max_model_len_is_a_400_naming_the_limit_and_the_prompt_tokens(
    client: openai.OpenAI, tiny_server: RunningServer
) -> None:
    with pytest.raises(openai.BadRequestError) as error:
        client.completions.create(model=tiny_server.model, prompt="word " * 900, max_tokens=4)
    message = error.value.body["message"]  # type: ignore[index]
    # vLLM stops tokenizing an oversized prompt at limit + 1 tokens, and says so ("at least 513").
    assert "maximum context length is 512 tokens" in message and "at least 513 input tokens" in message


@pytest.mark.parametrize(
    ("content", "param_part"),
    [(b'{"model": "m", "messages": [', "body"), (b'{"messages": "not a list", "max_tokens": "x"}', "body")],
)
def test_malformed_json_and_wrong_types_are_400_in_openai_shape(
    tiny_server: RunningServer, content: bytes, param_part: str
) -> None:
    response = post(
        tiny_server, "/v1/chat/completions", content=content, headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == 400 and param_part in (error["param"] or "") and error["message"]


@pytest.mark.parametrize(
    "path", ["/v1/models", "/tokenize", "/metrics", "/version", "/openapi.json", "/load"]
)
@pytest.mark.parametrize("auth", [None, "Bearer wrong-key"])
def test_every_route_but_health_needs_the_api_key(
    tiny_server: RunningServer, path: str, auth: str | None
) -> None:
    headers = {"Authorization": auth} if auth else {}
    response = httpx.get(f"{tiny_server.base_url}{path}", headers=headers, timeout=30)
    assert response.status_code == 401
    assert response.json()["error"]["type"] == "AuthenticationError"


@pytest.mark.parametrize("path", ["/tokenize", "/invocations", "/v1/chat/completions"])
def test_posts_without_the_key_are_refused_before_any_work(tiny_server: RunningServer, path: str) -> None:
    response = httpx.post(f"{tiny_server.base_url}{path}", json={"prompt": "x"}, timeout=30)
    assert response.status_code == 401


def test_a_foreign_pages_simple_request_changes_nothing(tiny_server: RunningServer) -> None:
    headers = {**tiny_server.headers(), "Origin": "https://evil.example", "Content-Type": "text/plain"}
    for path, body in (("/v1/collections", '{"name": "planted"}'), ("/v1/chat/completions", "{}")):
        response = httpx.post(f"{tiny_server.base_url}{path}", content=body, headers=headers, timeout=30)
        assert response.status_code == 403 and response.json()["error"]["param"] == "Origin"
    listed = httpx.get(f"{tiny_server.base_url}/v1/collections", headers=headers, timeout=30).json()
    assert "planted" not in [c["name"] for c in listed["data"]]


def test_options_without_the_key_is_refused(tiny_server: RunningServer) -> None:
    assert httpx.options(f"{tiny_server.base_url}/v1/models", timeout=30).status_code == 401


def test_health_needs_no_key_and_tokenize_works_with_it(tiny_server: RunningServer) -> None:
    assert httpx.get(f"{tiny_server.base_url}/health", timeout=30).status_code == 200
    response = post(tiny_server, "/tokenize", json={"model": tiny_server.model, "prompt": "hello world"})
    assert response.status_code == 200 and response.json()["count"] >= 2


def test_startup_log_names_the_dtype_and_url_and_holds_no_warnings(tiny_server: RunningServer) -> None:
    """The dtype is the one `auto` picks for this CPU (bfloat16 with AMX, else float32), and narrowing the
    float32 checkpoint to it warns nothing."""
    from compression.vllm_integration.cpu.cache_layout import cpu_dtype

    log = tiny_server.log_path.read_text()
    serving = f"lcrag is serving {tiny_server.model} ({cpu_dtype()}) at {tiny_server.base_url}"
    assert serving in log
    startup = log[: log.index(serving)]  # later lines answer other tests' (and the fuzzer's) bad requests
    assert [line for line in startup.splitlines() if "WARNING" in line or "Warning" in line] == []
