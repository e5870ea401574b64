"""A generation request, parsed once: vLLM's own chat / completion request model with lcrag's `lcrag` field.

`parse_request` turns the body into the typed request (a 400 naming the field otherwise, also for bodies
too deeply nested to parse); `resolve` merges a `docs@mode[:policy-ratio]` model name into the `lcrag`
field and only then checks the field as a whole, so `model="docs@rag"` with `{"top_k": 3}` is valid.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import PrivateAttr, ValidationError
from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest
from vllm.entrypoints.openai.completion.protocol import CompletionRequest

from compression.registry import PolicyError
from compression.spec import KVSpec
from rag.context import RenderedPrompt
from server.errors import BadRequestError
from server.schemas import LcragOptions

LCRAG_FIELD = "lcrag"
MODEL_NAME_SEPARATOR = "@"
MODES = ("rag", "lc", "auto")


class LcragChatRequest(ChatCompletionRequest):
    """vLLM's chat completion request plus the `lcrag` field; once planned, the prompt the engine is handed
    (`server.serving.LcragServingChat` reads it instead of rendering the messages)."""

    lcrag: LcragOptions | None = None
    _planned: RenderedPrompt | None = PrivateAttr(default=None)

    @property
    def planned(self) -> RenderedPrompt | None:
        return self._planned

    def with_prompt(self, planned: RenderedPrompt) -> LcragChatRequest:
        self._planned = planned
        return self


class LcragCompletionRequest(CompletionRequest):
    """vLLM's completion request plus the `lcrag` field (KV eviction only: collections need chat)."""

    lcrag: LcragOptions | None = None


GenerationRequest = TypeVar("GenerationRequest", LcragChatRequest, LcragCompletionRequest)


def parse_request(body: bytes, kind: type[GenerationRequest]) -> GenerationRequest:
    """The body as `kind`; a 400 naming the first invalid field (`lcrag.kv.ratio`, `messages.0.role` ...)."""
    try:
        return kind.model_validate_json(body)
    except ValidationError as error:
        raise body_error(error) from None


def body_error(error: ValidationError) -> BadRequestError:
    """A 400 listing each invalid field as a dotted path."""
    problems = []
    for problem in error.errors(include_url=False):
        loc = [str(part) for part in problem["loc"]]
        path = ".".join(loc if loc[:1] == [LCRAG_FIELD] else ["body", *loc])  # vLLM's own fields: as FastAPI
        problems.append((path, problem["msg"]))
    first = problems[0][0] if problems else "body"
    where = f"'{LCRAG_FIELD}' field" if first.split(".")[0] == LCRAG_FIELD else "request body"
    message = "; ".join(f"{path}: {msg}" for path, msg in problems)
    return BadRequestError(f"Invalid {where}: {message}", param=first)


@dataclass(frozen=True)
class ModelName:
    """`[<model>/]<collection>@<mode>[:<kv>]` split into its parts (model None means the served base)."""

    model: str | None
    collection: str
    mode: str
    kv: str | None


def parse_model_name(model: str) -> ModelName | None:
    """None for a plain model name; the parts for `docs@rag`-style names."""
    if MODEL_NAME_SEPARATOR not in model:
        return None
    target, _, mode_spec = model.rpartition(MODEL_NAME_SEPARATOR)
    base, _, collection = target.rpartition("/")
    mode, _, kv = mode_spec.partition(":")
    return ModelName(base or None, collection, mode, kv or None)


def parse_mode_spec(spec: str) -> tuple[str, KVSpec | None]:
    """`rag`, `lc`, `auto` or `<mode>:<policy>-<ratio>` (e.g. `lc:snapkv-0.75`) as (mode, KV spec).
    Raises ValueError with a message naming what is wrong."""
    mode, _, kv = spec.partition(":")
    if mode not in MODES:
        raise ValueError(f"unknown mode {spec!r}: use one of {', '.join(MODES)}, or e.g. 'lc:snapkv-0.75'")
    return mode, (KVSpec.parse(kv) if kv else None)


def resolve(request: GenerationRequest, served_model: str | None) -> tuple[GenerationRequest, LcragOptions]:
    """The request with a `docs@mode` model name replaced by the model it names, and the `lcrag` options
    the field and the name give together (the field wins where both speak), checked as a whole."""
    options = request.lcrag or LcragOptions()
    named = parse_model_name(request.model or "") if served_model is not None else None
    if named is not None:
        from_name: dict[str, Any] = {"collection": named.collection, "mode": named.mode}
        if named.kv is not None:
            try:
                from_name["kv"] = KVSpec.parse(named.kv)
            except ValueError as error:
                raise BadRequestError(f"model {request.model!r}: {error}", param="model") from None
        try:
            options = LcragOptions.model_validate({**from_name, **options.model_dump(exclude_none=True)})
        except ValidationError:
            raise BadRequestError(
                f"model {named.collection + MODEL_NAME_SEPARATOR + named.mode!r}: use '<collection>@rag', "
                "'<collection>@lc' or '<collection>@auto' with a collection name of 3-63 characters.",
                param="model",
            ) from None
        request = request.model_copy(update={"model": named.model or served_model})
    check_options(options)
    return request, options


def check_options(options: LcragOptions) -> None:
    """A 400 for fields that need a collection without one, an unknown policy or option, or a cache asked of
    a policy that scores with the question."""
    missing = options.needs_collection()
    if missing is not None:
        raise BadRequestError(
            f"Invalid '{LCRAG_FIELD}' field: '{missing}' needs 'collection' (the collection to answer from).",
            param=f"{LCRAG_FIELD}.{missing}",
        )
    if options.kv is None:
        return
    try:
        policy = options.kv.policy_object
    except PolicyError as error:
        raise BadRequestError(f"Invalid '{LCRAG_FIELD}.kv': {error}", param=f"{LCRAG_FIELD}.kv") from None
    if options.kv.cache and not policy.query_agnostic:
        raise BadRequestError(
            f"Invalid '{LCRAG_FIELD}.kv.cache': policy {policy.name!r} scores with the question, so one "
            "compressed context cannot serve other questions; use a query-agnostic policy (GET "
            "/v1/kv/policies) or leave 'cache' out.",
            param=f"{LCRAG_FIELD}.kv.cache",
        )
