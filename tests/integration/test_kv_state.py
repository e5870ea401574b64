"""Each request's KV state is one `RequestKV` in the scheduler's table, from `add_request` to
`_free_request`: the table is empty once requests have finished, been aborted (running or waiting) or
been preempted and resumed, a preempted request's running state is reset while it waits, and the model
runner keeps no captured queries or scores of its own; the reconstruction scores the runner keeps are the
ones the scheduler lists."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from compression.spec import CacheKey, KVSpec
from compression.vllm_integration import scheduler as scheduler_module
from compression.vllm_integration.control import control
from tests.kv_engine import counted_preemptions, engine, generate, random_prompt, sampling, scheduler_of

pytestmark = pytest.mark.integration
NEW_TOKENS = 96


@pytest.fixture(scope="module")
def llm(peaky_model_dir: Path) -> Iterator[Any]:
    with engine(peaky_model_dir, num_gpu_blocks_override=20, max_model_len=512) as small:
        yield small


def runner_of(llm: Any) -> Any:
    return llm.llm_engine.engine_core.engine_core.model_executor.driver_worker.worker.model_runner


def assert_nothing_left(llm: Any) -> None:
    assert not scheduler_of(llm).kvc_table
    # the runner hears of requests that finished in the last step with the next step: run one
    generate(llm, [random_prompt(0, 8)], sampling(1))
    runner = runner_of(llm)
    assert not runner.kvc_queries and not runner.kvc_scores and not runner.kvc_work


def test_finished_and_aborted_requests_leave_no_state(llm: Any) -> None:
    from vllm import SamplingParams

    context = random_prompt(1, 230)
    extra = KVSpec.parse("knorm-0.5").task(len(context)).extra_args()
    cache = SamplingParams(max_tokens=8, logprobs=0, extra_args=extra)
    outputs = generate(
        llm,
        [context + random_prompt(2, 12), context + random_prompt(3, 15), random_prompt(4, 150)],
        [cache, cache, sampling(8, "snapkv", 0.5)],
    )
    assert all(out.kv_stats is not None for out in outputs)
    assert_nothing_left(llm)
    scheduler = scheduler_of(llm)
    # 64 tokens a step: the first is prefilling (its queries captured) while the second waits
    for name, seed, policy in (("running", 5, "h2o"), ("waiting", 6, "tova")):
        prompt = {"prompt_token_ids": random_prompt(seed, 200)}
        llm.llm_engine.add_request(name, prompt, sampling(8, policy, 0.5))
    llm.llm_engine.step()
    assert len(scheduler.kvc_table) == 2 and runner_of(llm).kvc_queries
    llm.llm_engine.abort_request(["running", "waiting"])
    assert not llm.llm_engine.has_unfinished_requests()
    assert_nothing_left(llm)
    control(llm, "drop")


def test_preempted_requests_wait_with_their_running_state_reset_and_leave_nothing(llm: Any) -> None:
    from vllm.v1.request import RequestStatus

    scheduler = scheduler_of(llm)
    prompts = [random_prompt(300 + i, 200 + 10 * i) for i in range(6)]
    params = [sampling(NEW_TOKENS, "snapkv", 0.5) for _ in range(4)] + [sampling(NEW_TOKENS)] * 2
    waited = 0
    with counted_preemptions(llm) as preemptions:
        for index, (prompt, param) in enumerate(zip(prompts, params, strict=True)):
            llm.llm_engine.add_request(f"preempted-{index}", {"prompt_token_ids": prompt}, param)
        while llm.llm_engine.has_unfinished_requests():
            llm.llm_engine.step()
            for request_id, state in scheduler.kvc_table.items():
                if scheduler.requests[request_id].status == RequestStatus.PREEMPTED:
                    waited += 1
                    running = (state.offset, state.adopting, state.adopted, state.into)
                    assert running == (None, None, False, None)
    assert preemptions and waited, "nothing was preempted; shrink the KV cache"
    assert_nothing_left(llm)


def test_the_runner_keeps_the_reconstruction_scores_the_scheduler_lists(
    llm: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from vllm import SamplingParams

    monkeypatch.setattr(scheduler_module, "PASS_SCORES_KEPT", 2)
    kv = KVSpec(policy="kvzip", ratio=0.5, options={"repeat": 64})
    contexts = [random_prompt(400 + i, 150) for i in range(3)]
    for context in contexts:
        extra = kv.scoring_pass(len(context), (0, 64)).extra_args()
        prompt = {"prompt_token_ids": context + context[:64]}
        llm.generate([prompt], SamplingParams(max_tokens=1, extra_args=extra), use_tqdm=False)
    scored = control(llm, "list")["scored_contexts"]
    assert [tuple(key) for key in scored] == list(runner_of(llm).kvc_pass_scores)
    assert scored == [CacheKey.of(kv, context).scores_key() for context in contexts[1:]]
    assert_nothing_left(llm)
