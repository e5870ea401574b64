"""vLLM's chat handler, taught to take the pipeline's prompt token ids instead of rendering the messages.

Extends (vllm/entrypoints/openai/chat_completion/serving.py) `OpenAIServingChat.render_chat_request`:
for a request the pipeline planned (`LcragChatRequest.planned`), the model is checked as vLLM checks it
and the planned token ids become the engine input; any other request renders as vLLM renders it.
The handler vLLM built at start-up is adopted in place (`adopt`), so its configuration stays vLLM's.
"""

from __future__ import annotations

from typing import Any, cast

from vllm.entrypoints.openai.chat_completion.serving import OpenAIServingChat

from server.pipeline.request import LcragChatRequest


class LcragServingChat(OpenAIServingChat):
    async def render_chat_request(self, request: Any) -> Any:
        planned = request.planned if isinstance(request, LcragChatRequest) else None
        if planned is None:
            return await super().render_chat_request(request)
        error = await self._check_model(request)
        if error is not None:
            return error
        self._preflight(request.n or 1)
        engine_inputs = await self.renderer.render_cmpl_async([{"prompt_token_ids": planned.token_ids}])
        conversation = [{"role": m["role"], "content": m["content"]} for m in planned.messages]
        return conversation, list(engine_inputs)


def adopt(handler: OpenAIServingChat) -> LcragServingChat:
    """vLLM's chat handler, now an `LcragServingChat` (same object, same state)."""
    handler.__class__ = LcragServingChat
    return cast(LcragServingChat, handler)
