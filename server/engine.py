"""The engine, as lcrag's server uses it: generation from prompt token ids (the pipeline tokenizes once),
a short greedy completion (`auto`'s probe), and the LoRA adapter a model name stands for."""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("lcrag.server")


@dataclass
class Engine:
    client: Any  # vLLM's engine client (AsyncLLM)
    models: Any = None  # vLLM's OpenAIServingModels (adapter name -> LoRARequest)

    def lora_request(self, model: str | None) -> Any:
        """The LoRA adapter served as `model`, None for the base model (or an unknown name)."""
        requests = self.models.lora_requests if self.models is not None else {}
        return requests.get(model) if model else None

    async def generate(
        self, token_ids: list[int], params: Any, model: str | None = None, request_id: str | None = None
    ) -> AsyncIterator[Any]:
        """vLLM's `RequestOutput`s for one prompt given as token ids."""
        (engine_input,) = await self.client.renderer.render_cmpl_async([{"prompt_token_ids": token_ids}])
        request_id = request_id or f"lcrag-{uuid.uuid4().hex}"
        async for output in self.client.generate(
            engine_input, params, request_id, lora_request=self.lora_request(model)
        ):
            yield output

    async def complete(self, token_ids: list[int], max_tokens: int, model: str | None = None) -> str | None:
        """A greedy answer of at most `max_tokens` to the prompt; None (logged) if the engine refused it."""
        from vllm import SamplingParams

        params = SamplingParams(max_tokens=max_tokens, temperature=0.0)
        final = None
        try:
            async for output in self.generate(token_ids, params, model):
                final = output
        except Exception as error:  # the caller goes on without this answer
            log.warning("engine completion failed: %s", error)
            return None
        return final.outputs[0].text if final is not None and final.outputs else None
