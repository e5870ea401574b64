"""auto mode's routing decisions (Self-Route), with retrieval and the model replaced by stand-ins."""

from dataclasses import dataclass, field
from typing import Any

import pytest

from lcrag.settings import load_settings
from rag.context import SELF_ROUTE_INSTRUCTIONS, RenderedPrompt
from rag.errors import ContextTooLongError
from rag.retrieve import Citation
from server.pipeline.modes import auto
from server.pipeline.plan import ModePrompt
from server.schemas import LcragOptions

pytestmark = pytest.mark.anyio
QUESTION = [{"role": "user", "content": "Where is the bridge?"}]


def rendered(tokens: int) -> RenderedPrompt:
    return RenderedPrompt([{"role": "user", "content": "x"}], "x", list(range(tokens)))


@dataclass
class FakePrompts:
    """Stands in for the rag and lc planners: rag finds one chunk of `score`; lc fits unless told."""

    score: float = 0.6
    lc_fits: bool = True
    built: list[tuple[str, str | None]] = field(default_factory=list)

    def rag(self, services: Any, options: LcragOptions, collection: str, messages: Any, max_tokens: Any,
            instructions: str | None = None) -> ModePrompt:  # fmt: skip
        self.built.append(("rag", instructions))
        chunk = Citation(1, "d1", "brisk", 0, 0, 10, None, self.score, "A bridge of seven arches.")
        return ModePrompt("rag", collection, rendered(80), "Where?", [chunk], retrieval_ms=5.0)

    def lc(self, services: Any, collection: str, messages: Any, max_tokens: Any) -> ModePrompt:
        self.built.append(("lc", None))
        if not self.lc_fits:
            raise ContextTooLongError("too long", needed=900, available=448)
        return ModePrompt("lc", collection, rendered(300), "Where?")


@dataclass
class FakeModel:
    """Stands in for the engine: answers `text` (None: the request failed) and records each call."""

    text: str | None
    calls: list[tuple[list[int], int]] = field(default_factory=list)

    async def __call__(self, token_ids: list[int], max_tokens: int) -> str | None:
        self.calls.append((token_ids, max_tokens))
        return self.text


@dataclass
class FakeServices:
    settings: Any


@pytest.fixture
def prompts(monkeypatch: pytest.MonkeyPatch) -> FakePrompts:
    fake = FakePrompts()
    monkeypatch.setattr(auto, "plan_rag", fake.rag)
    monkeypatch.setattr(auto, "plan_lc", fake.lc)
    return fake


async def route(model: FakeModel) -> ModePrompt:
    services = FakeServices(load_settings(auto_min_score=0.3, auto_probe_tokens=12))
    options = LcragOptions(collection="docs", mode="auto")
    return await auto.plan_auto(services, options, "docs", QUESTION, 64, model)  # type: ignore[arg-type]


async def test_an_answer_from_the_chunks_keeps_rag_with_the_self_route_prompt(prompts: FakePrompts) -> None:
    model = FakeModel("Brisk has a bridge of seven arches [1].")
    prepared = await route(model)
    assert prepared.reported_mode == "auto" and prepared.route is not None and prepared.route.route == "rag"
    assert "answered it (best score 0.60)" in prepared.route.reason
    assert prompts.built == [("rag", SELF_ROUTE_INSTRUCTIONS)]
    assert model.calls == [(prepared.prompt.token_ids, 12)]  # the same prompt, a short attempt


@pytest.mark.parametrize("answer", ["UNANSWERABLE", "unanswerable.", "Sorry - UNANSWERABLE"])
async def test_the_marker_sends_the_question_to_lc(prompts: FakePrompts, answer: str) -> None:
    prepared = await route(FakeModel(answer))
    assert prepared.route is not None and prepared.route.route == "lc"
    assert prepared.route.reason == "RAG answer was UNANSWERABLE" and len(prepared.prompt.token_ids) == 300
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
