"""`lcrag serve` with the bundled SmolLM2-135M-Instruct answers from a short context."""

import openai
import pytest

from tests.conftest import RunningServer

pytestmark = [pytest.mark.integration, pytest.mark.real_model]


def test_default_model_answers_the_access_code_from_the_context(real_server: RunningServer) -> None:
    client = openai.OpenAI(base_url=f"{real_server.base_url}/v1", api_key="unused", max_retries=0)
    assert client.models.list().data[0].id == "smollm2-135m-instruct"
    reply = client.chat.completions.create(
        model="smollm2-135m-instruct",
        messages=[
            {
                "role": "user",
                "content": "Context: The storeroom is on the second floor. "
                "The access code is 4817. Deliveries arrive on Mondays.\n\n"
                "Question: What is the access code? Answer with the number only.",
            }
        ],
        max_tokens=12,
        temperature=0,
    )
    assert "4817" in (reply.choices[0].message.content or "")
