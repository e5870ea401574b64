"""auto mode's routing decisions (Self-Route), with retrieval and the model replaced by stand-ins."""

from dataclasses import dataclass, field
from typing import Any

import pytest

from lcrag.settings import load_settings
from rag.context import SELF_ROUTE_INSTRUCTIONS
from rag.errors import ContextTooLongError
from rag.retrieve import Citation
from server import auto
from server.modes import PreparedPrompt
from server.schemas import LcragOptions

pytestmark = pytest.mark.anyio
QUESTION = [{"role": "user", "content": "Where is the bridge?"}]


@dataclass
class FakePrompts:
    """Stands in for `server.modes.prepare`: rag finds one chunk of `score`; lc fits unless told."""

    score: float = 0.6
    lc_fits: bool = True
    built: list[tuple[str, str | None]] = field(default_factory=list)

    def __call__(self, services: Any, options: LcragOptions, messages: Any, max_tokens: Any,
                 rag_instructions: str | None = None) -> PreparedPrompt:  # fmt: skip
        self.built.append((str(options.mode), rag_instructions))
        if options.mode == "lc":
            if not self.lc_fits:
                raise ContextTooLongError("too long", needed=900, available=448)
            return PreparedPrompt("lc", "docs", [{"role": "user", "content": "everything"}], 300)
        chunk = Citation(1, "d1", "brisk", 0, 0, 10, None, self.score, "A bridge of seven arches.")
        return PreparedPrompt("rag", "docs", [{"role": "user", "content": "chunks"}], 80, [chunk], 5.0)


@dataclass
class FakeModel:
    """Stands in for the engine: answers `text` (None: the request failed) and records each call."""

    text: str | None
    calls: list[tuple[list[dict[str, str]], int]] = field(default_factory=list)

    async def __call__(self, messages: list[dict[str, str]], max_tokens: int) -> str | None:
        self.calls.append((messages, max_tokens))
        return self.text


@dataclass
class FakeServices:
    settings: Any


@pytest.fixture
def prompts(monkeypatch: pytest.MonkeyPatch) -> FakePrompts:
    fake = FakePrompts()
    monkeypatch.setattr(auto, "prepare", fake)
    return fake


async def route(model: FakeModel) -> PreparedPrompt:
    services = FakeServices(load_settings(auto_min_score=0.3, auto_probe_tokens=12))
    options = LcragOptions(collection="docs", mode="auto")
    return await auto.prepare_auto(services, options, QUESTION, 64, model)  # type: ignore[arg-type]


async def test_an_answer_from_the_chunks_keeps_rag_with_the_self_route_prompt(prompts: FakePrompts) -> None:
    model = FakeModel("Brisk has a bridge of seven arches [1].")
    prepared = await route(model)
    assert prepared.mode == "auto" and prepared.route is not None and prepared.route.route == "rag"
    assert "answered it (best score 0.60)" in prepared.route.reason
    assert prompts.built == [("rag", SELF_ROUTE_INSTRUCTIONS)]
    assert model.calls == [(prepared.messages, 12)]  # the same prompt, a short attempt


@pytest.mark.parametrize("answer", ["UNANSWERABLE", "unanswerable.", "Sorry - UNANSWERABLE"])
async def test_the_marker_sends_the_question_to_lc(prompts: FakePrompts, answer: str) -> None:
    prepared = await route(FakeModel(answer))
    assert prepared.route is not None and prepared.route.route == "lc"
    assert prepared.route.reason == "RAG answer was UNANSWERABLE" and prepared.prompt_tokens == 300
    assert prepared.retrieval_ms == 5.0 and prepared.citations == []


async def test_a_low_retrieval_score_goes_to_lc_without_asking_the_model(prompts: FakePrompts) -> None:
    prompts.score = 0.1
    model = FakeModel("never asked")
    prepared = await route(model)
    assert prepared.route is not None and prepared.route.route == "lc"
    assert prepared.route.reason == "best retrieval score 0.10 < 0.30"
    assert model.calls == []


async def test_lc_that_does_not_fit_leaves_the_answer_with_rag(prompts: FakePrompts) -> None:
    prompts.lc_fits = False
    prepared = await route(FakeModel("UNANSWERABLE"))
    assert prepared.route is not None and prepared.route.route == "rag"
    assert "does not fit lc (900 > 448 tokens)" in prepared.route.reason


async def test_a_failed_attempt_leaves_the_answer_with_rag(prompts: FakePrompts) -> None:
    prepared = await route(FakeModel(None))
    assert prepared.route is not None and prepared.route.route == "rag"
    assert "failed" in prepared.route.reason


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
