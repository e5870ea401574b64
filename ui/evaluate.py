"""The Evaluate view's handler: `lcrag eval collection` on the selected collection with a small N, through
the same HTTP API the page uses, shown as the suite's table and equal-memory plot. Answers are cached per
collection in a temporary folder, so asking again only fills what changed."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import gradio as gr

from lcrag.client import ApiFailure, LcragClient
from ui import views

RESULTS_DIR = Path(tempfile.gettempdir()) / "lcrag-ui-evals"
PROGRESS = gr.Progress()  # the default Gradio replaces with the event's tracker


def evaluate(
    client: LcragClient,
    collection: str | None,
    model: str | None,
    questions: float,
    top_k: float,
    kinds: list[str] | None,
    policy: str | None,
    ratio: float,
    progress: gr.Progress = PROGRESS,
) -> tuple[str, Any]:
    """The report (command, notes, table) as Markdown and the equal-memory plot, or a readable error line."""
    from PIL import Image

    from evals.collection import CollectionEval, answer_cache, run, write
    from evals.collection_questions import TooSmallError

    if not collection:
        return views.error_note("Choose a collection to evaluate first."), None
    if not kinds:
        return views.error_note("Choose at least one question kind to evaluate."), None
    spec = CollectionEval(
        collection,
        questions=int(questions),
        kinds=tuple(kinds),
        top_k=(int(top_k),),
        kv=(f"{policy}-{ratio:g}",) if policy else (),
    )
    out = RESULTS_DIR / collection
    progress((0, 1), desc="Making held-out questions", unit="answers")
    try:
        report = run(
            client.http,
            spec,
            answer_cache(out, collection),
            model,
            lambda done, total: progress((done, total), desc="Answering", unit="answers"),
        )
    except (TooSmallError, ValueError, ApiFailure) as error:
        return views.error_note(str(error)), None
    table = write(out, report, spec.command())
    with Image.open(out / "collection.png") as image:
        plot = image.copy()
    return f"`{spec.command()}`\n\n{table}", plot
