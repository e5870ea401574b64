"""The chat pipeline: a parsed request in, the request the engine runs and its reply's `lcrag` field out.

    parse (request.py) -> resolve the model name -> plan the collection prompt (modes/) -> the KV eviction
    (plan.py: per request, or the collection's shared cache) -> reconstruction passes first when the policy
    needs them -> the request, its prompt token ids and KV task attached, for vLLM's handler

Requests that ask nothing of lcrag (no `lcrag` field, a plain model name, no server default eviction) pass
through as vLLM parsed them. `auto` probes the engine in-process; `/v1/compare` calls `chat` per mode.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from starlette.concurrency import run_in_threadpool

from compression.spec import KVSpec, KVTask
from rag.context import render_prompt
from rag.errors import RagError
from server.engine import Engine
from server.errors import BadRequestError, NotImplementedYetError, from_rag_error
from server.kv_cache import ContextCaches
from server.pipeline.modes.auto import plan_auto
from server.pipeline.modes.lc import plan_lc
from server.pipeline.modes.rag import plan_rag
from server.pipeline.plan import ChatPlan, ModePrompt
from server.pipeline.reply import Reply
from server.pipeline.request import (
    LCRAG_FIELD,
    MODEL_NAME_SEPARATOR,
    LcragChatRequest,
    LcragCompletionRequest,
    resolve,
)
from server.schemas import LcragOptions
from server.services import Services

CHAT_PATH = "/v1/chat/completions"


@dataclass
class Pipeline:
    services: Services | None = None  # None: a server without collections (the engine only)
    engine: Engine | None = None
    caches: ContextCaches | None = None  # set when the engine runs lcrag's eviction

    def concerns_lcrag(self, request: LcragChatRequest | LcragCompletionRequest) -> bool:
        return (
            request.lcrag is not None
            or MODEL_NAME_SEPARATOR in (request.model or "")
            or (self.services is not None and self.services.default_kv is not None)
        )

    async def chat(self, request: LcragChatRequest) -> tuple[LcragChatRequest, Reply | None]:
        """The request as the engine runs it (prompt token ids and KV task attached) and what its reply adds;
        ApiError for what cannot run."""
        started = time.perf_counter()
        if not self.concerns_lcrag(request):
            return request, None
        request, options = resolve(request, self._served_model())
        kv = self._eviction(options)  # before any retrieval or probe: a 501 needs no work done first
        plan = ChatPlan(await self._mode_prompt(request, options), kv)
        if plan.prompt is None and plan.kv is None:
            return request, None
        task = plan.kv_task()
        prompt = plan.prompt.prompt if plan.prompt is not None else None
        if task is not None and prompt is None and task.policy.needs_reconstruction:
            assert self.services is not None  # eviction runs only on a server with services
            prompt = render_prompt(self.services.tokenizer, self._plain_messages(request, task))
        if task is not None:
            await self._prepare_kv(task, prompt.token_ids if prompt else [], request.model)
            request = request.model_copy(
                update={"vllm_xargs": {**(request.vllm_xargs or {}), **task.extra_args()}}
            )
        if prompt is not None:
            request = request.with_prompt(prompt)
        return request, Reply(plan, options, self.services, started)

    async def completion(
        self, request: LcragCompletionRequest
    ) -> tuple[LcragCompletionRequest, Reply | None]:
        """A completion request with its KV task attached (completions take no collection)."""
        started = time.perf_counter()
        if not self.concerns_lcrag(request):
            return request, None
        request, options = resolve(request, self._served_model())
        if options.collection is not None:
            raise BadRequestError(
                f"'{LCRAG_FIELD}.collection' works with {CHAT_PATH}; send the question as chat messages.",
                param=f"{LCRAG_FIELD}.collection",
            )
        kv = self._eviction(options)
        if kv is None:
            return request, None
        if kv.policy_object.needs_reconstruction:
            raise self._not_plain_chat(kv)
        request = request.model_copy(
            update={"vllm_xargs": {**(request.vllm_xargs or {}), **kv.task().extra_args()}}
        )
        return request, Reply(ChatPlan(None, kv), options, self.services, started)

    async def _mode_prompt(self, request: LcragChatRequest, options: LcragOptions) -> ModePrompt | None:
        collection = options.collection
        if collection is None:
            return None
        services = self.services
        if services is None:
            raise NotImplementedYetError("This server has no collections.", param=f"{LCRAG_FIELD}.collection")
        max_tokens = request.max_completion_tokens or request.max_tokens
        messages: list[Any] = list(request.messages)
        try:
            if options.mode == "auto":
                model = request.model

                async def probe(token_ids: list[int], limit: int) -> str | None:
                    assert self.engine is not None
                    return await self.engine.complete(token_ids, limit, model)

                return await plan_auto(services, options, collection, messages, max_tokens, probe)
            if options.mode == "lc":
                return await run_in_threadpool(plan_lc, services, collection, messages, max_tokens)
            return await run_in_threadpool(plan_rag, services, options, collection, messages, max_tokens)
        except RagError as error:
            raise from_rag_error(error, param=f"{LCRAG_FIELD}.collection") from None

    def _eviction(self, options: LcragOptions) -> KVSpec | None:
        """The request's KV eviction (its own, else the server default), None when it evicts nothing."""
        kv = options.kv
        if kv is None and self.services is not None:
            kv = self.services.default_kv
        if kv is None or not kv.evicts:
            return None
        if self.services is None or self.services.kv_stats is None:
            raise NotImplementedYetError(
                f"'{LCRAG_FIELD}.kv': KV-cache eviction is not loaded in this server; start it with "
                "`lcrag serve --kv-eviction` (CPU), or use policy 'none' or ratio 0.",
                param=f"{LCRAG_FIELD}.kv",
            )
        return kv

    async def _prepare_kv(self, task: KVTask, prompt_ids: list[int], model: str | None) -> None:
        """A policy scored by reconstruction passes gets them run first, over the shared context (unless
        its cache is resident) or over the whole prompt."""
        if self.caches is None or not task.policy.needs_reconstruction:
            return
        ids = prompt_ids[: task.context] if task.context is not None else prompt_ids
        await self.caches.prepare(ids, task.spec, model)

    def _plain_messages(self, request: LcragChatRequest, task: KVTask) -> list[Any]:
        """The messages of a chat request without a collection, when all are plain text (lcrag renders
        them itself to run reconstruction passes over them); a 400 otherwise."""
        messages = [m for m in request.messages if isinstance(m, dict)]
        if len(messages) != len(request.messages) or not all(
            isinstance(m.get("content"), str) for m in messages
        ):
            raise self._not_plain_chat(task.spec)
        return [{"role": m["role"], "content": m["content"]} for m in messages]

    @staticmethod
    def _not_plain_chat(kv: KVSpec) -> BadRequestError:
        return BadRequestError(
            f"KV policy {kv.policy!r} scores the prompt with reconstruction passes, which lcrag runs for "
            f"{CHAT_PATH} requests whose messages are plain text; send it that way, or use another policy "
            "(GET /v1/kv/policies).",
            param=f"{LCRAG_FIELD}.kv.policy",
        )

    def _served_model(self) -> str | None:
        return self.services.served_model if self.services is not None else None
