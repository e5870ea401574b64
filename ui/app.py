"""The side-by-side UI: drop documents in, ask once, watch the modes answer at the same time with their costs.

A Gradio Blocks app the server mounts at /ui (`ui.mount`). Everything it shows comes from the server's HTTP
API through `LcragClient`: collections and uploads, `/v1/models`, `/v1/kv/policies`, and `/v1/compare`,
streamed, one stream per answer column. One listener asks all columns (`ui.answers` says why), so they
stream at the same time; each keeps its own chat history, sent with its next question.
Every handler turns a failure into a readable line in the page, never a stack trace.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import gradio as gr

from ui import views
from ui.answers import ColumnAnswer, ColumnAsk, Question, merged_events
from ui.client import ApiFailure, LcragClient
from ui.evaluate import evaluate

MODE_CHOICES = [
    ("RAG (retrieved chunks)", "rag"),
    ("LC (whole collection)", "lc"),
    ("Auto (Self-Route)", "auto"),
]
DEFAULT_POLICY = "snapkv"
QUEUE_CONCURRENCY = 16
CACHE_SWEEP_S = 3600
CSS = """
.citations details { border-bottom: 1px solid var(--border-color-primary); padding: 2px 0; }
.citations .chunk { white-space: pre-wrap; font-size: 0.9em; padding: 4px 8px; }
"""
THEME = gr.themes.Default(
    font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"]
)
COLUMN_KEYS = ("a", "b", "c")  # two mode columns, then the LC + KV-compression column
OUTPUTS_PER_COLUMN = 4
PROGRESS = gr.Progress()  # a default value Gradio recognises and replaces with the event's tracker


@dataclass
class AnswerColumn:
    """The widgets of one answer column."""

    key: str
    chat: gr.Chatbot
    metrics: gr.Markdown
    citations: gr.HTML
    result: gr.JSON

    @property
    def outputs(self) -> list[Any]:
        """What an answer updates, in `ColumnAnswer.outputs` order."""
        return [self.chat, self.metrics, self.citations, self.result]


# ---- handlers (plain functions of the client and the inputs; `build` wires them) ----


def refresh(client: LcragClient, current: str | None) -> tuple[Any, Any, Any, str]:
    """Collections, models and KV policies from the server, for the pickers."""
    try:
        names = [info["name"] for info in client.collections()]
        models = client.models()
        policies = [name for name in client.kv_policies() if name != "none"]
    except ApiFailure as error:
        return gr.skip(), gr.skip(), gr.skip(), views.error_note(error.message)
    chosen = current if current in names else (names[0] if names else None)
    policy = DEFAULT_POLICY if DEFAULT_POLICY in policies else (policies[0] if policies else None)
    return (
        gr.Dropdown(choices=names, value=chosen),
        gr.Dropdown(choices=models, value=models[0] if models else None),
        gr.Dropdown(choices=policies, value=policy),
        gr.skip(),  # a page load finishing late must not wipe what an earlier action reported
    )


def create_collection(client: LcragClient, name: str) -> tuple[Any, str]:
    name = (name or "").strip()
    if not name:
        return gr.skip(), views.error_note("Type a name for the new collection first.")
    try:
        client.create_collection(name)
        names = [info["name"] for info in client.collections()]
    except ApiFailure as error:
        return gr.skip(), views.error_note(error.message)
    return gr.Dropdown(choices=names, value=name), f"Created collection **{name}**."


def describe_collection(client: LcragClient, name: str | None) -> str:
    if not name:
        return "No collection yet: create one, then add documents."
    try:
        return views.collection_markdown(client.collection(name), client.collection_caches(name))
    except ApiFailure as error:
        return views.error_note(error.message)


def forget_upload(path: Path) -> None:
    """Delete Gradio's temporary copy of an uploaded file (and its folder, once empty): the server has it."""
    path.unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        path.parent.rmdir()


def upload_files(
    client: LcragClient, files: list[str] | None, collection: str | None, progress: gr.Progress = PROGRESS
) -> tuple[str, str, None]:
    """Upload each file, reporting what was stored or why not; the ingest result and collection size."""
    if not files:
        return gr.skip(), gr.skip(), None
    if not collection:
        return views.error_note("Choose or create a collection before adding documents."), gr.skip(), None
    lines = []
    for index, file in enumerate(files):
        path = Path(file)
        progress((index, len(files)), desc=f"Ingesting {path.name}", unit="files")
        try:
            lines.append(views.ingest_line(path.name, client.upload(collection, path)))
        except ApiFailure as error:
            lines.append(views.error_note(f"**{path.name}**: {error.message}"))
        finally:
            forget_upload(path)
    return views.upload_markdown(lines), describe_collection(client, collection), None


def check_question(question: str, collection: str | None) -> str:
    """The page's status line for an ask: what is missing, or nothing."""
    if not (question or "").strip():
        return views.error_note("Type a question first.")
    if not collection:
        return views.error_note("Choose a collection (or create one and add documents) first.")
    return ""


def compressed_mode(enabled: bool, policy: str | None, ratio: float) -> str | None:
    """The LC + KV-compression column's mode (`lc:<policy>-<ratio>`), or None while it is switched off."""
    return f"lc:{policy}-{ratio:g}" if enabled and policy else None


def ask(
    client: LcragClient,
    question: str,
    collection: str | None,
    model: str | None,
    max_tokens: int,
    mode_a: str | None,
    mode_b: str | None,
    compressed_on: bool,
    policy: str | None,
    ratio: float,
    one_at_a_time: bool,
    chat_a: list[dict[str, Any]] | None,
    chat_b: list[dict[str, Any]] | None,
    chat_c: list[dict[str, Any]] | None,
) -> Iterator[list[Any]]:
    """Every column answers `question`, each in its mode with its own history, streamed: all at once, or
    with `one_at_a_time` one after another so that each column's costs are its own (`ui.answers`).

    Yields the status line, then each column's outputs (`AnswerColumn.outputs`), after every event of any
    column; a column without a mode is left as it was. A missing question or collection is only a status line.
    """
    problem = check_question(question, collection)
    if problem:
        yield [problem, *[gr.skip()] * (len(COLUMN_KEYS) * OUTPUTS_PER_COLUMN)]
        return
    modes = (mode_a, mode_b, compressed_mode(compressed_on, policy, ratio))
    chats = (chat_a, chat_b, chat_c)
    asks = [
        ColumnAsk(key, mode, chat or [])
        for key, mode, chat in zip(COLUMN_KEYS, modes, chats, strict=True)
        if mode
    ]
    answers = {a.key: ColumnAnswer.open(a.chat, question) for a in asks}

    def page() -> list[Any]:
        left_alone = [gr.skip()] * OUTPUTS_PER_COLUMN
        columns = (answers[key].outputs() if key in answers else left_alone for key in COLUMN_KEYS)
        return ["", *(value for column in columns for value in column)]

    yield page()
    shared = Question(question, collection or "", model, max_tokens)
    for key, event in merged_events(client, shared, asks, one_at_a_time):
        answers[key].absorb(event)
        yield page()


def chart(*results: dict[str, Any] | None) -> list[Any]:
    return views.chart_frames(results)


# ---- layout ----


def _answer_column(key: str, label: str) -> AnswerColumn:
    chat = gr.Chatbot(label=label, elem_id=f"answer-{key}", height=360, buttons=["copy"])
    metrics = gr.Markdown(elem_id=f"metrics-{key}")
    with gr.Accordion("Citations", open=True):
        citations = gr.HTML(elem_id=f"citations-{key}")
    with gr.Accordion("Raw result (from /v1/compare)", open=False):
        result = gr.JSON(elem_id=f"result-{key}", show_label=False)
    return AnswerColumn(key, chat, metrics, citations, result)


def _bar_plot(title: str) -> gr.BarPlot:
    return gr.BarPlot(
        x="mode",
        y="value",
        title=title,
        x_title="",
        y_title="",
        y_lim=[0, None],
        height=200,
        show_label=False,
    )


@dataclass
class EvaluateView:
    """Held-out questions from the selected collection, in every mode (`ui.evaluate`)."""

    questions: gr.Slider
    top_k: gr.Slider
    button: gr.Button
    report: gr.Markdown
    plot: gr.Image


def _evaluate_view() -> EvaluateView:
    with gr.Accordion("Evaluate this collection", open=False, elem_id="evaluate"):
        gr.Markdown(
            "Held-out questions from the collection (a blanked word, the sentence after a quoted one, "
            "planted numbers), asked in RAG, LC, LC with the eviction policy and ratio above, and Auto. "
            "Accuracy against the KV memory each answer held. The same as `lcrag eval collection NAME`."
        )
        with gr.Row():
            questions = gr.Slider(1, 10, value=3, step=1, label="Questions per kind", elem_id="evaluate-n")
            top_k = gr.Slider(1, 10, value=5, step=1, label="RAG top-k", elem_id="evaluate-top-k")
        button = gr.Button("Evaluate", elem_id="evaluate-run")
        report = gr.Markdown(elem_id="evaluate-report")
        plot = gr.Image(
            label="Accuracy vs KV memory held", type="pil", interactive=False, elem_id="evaluate-plot"
        )
    return EvaluateView(questions, top_k, button, report, plot)


@dataclass
class Sidebar:
    """Collection, documents, model and KV-compression pickers."""

    collection: gr.Dropdown
    collection_info: gr.Markdown
    new_name: gr.Textbox
    create: gr.Button
    files: gr.File
    upload_report: gr.Markdown
    model: gr.Dropdown
    max_tokens: gr.Slider
    compressed_on: gr.Checkbox
    policy: gr.Dropdown
    ratio: gr.Slider
    one_at_a_time: gr.Checkbox


def _sidebar() -> Sidebar:
    collection = gr.Dropdown(label="Collection", choices=[], elem_id="collection", allow_custom_value=True)
    collection_info = gr.Markdown(elem_id="collection-info")
    with gr.Accordion("New collection", open=False):
        new_name = gr.Textbox(label="Name", placeholder="3-63 characters: a-z 0-9 _ -")
        create = gr.Button("Create", elem_id="create-collection")
    files = gr.File(
        label="Add documents (.txt .md .html .pdf .docx)",
        file_count="multiple",
        type="filepath",
        elem_id="upload",
    )
    upload_report = gr.Markdown(elem_id="upload-report")
    model = gr.Dropdown(label="Model / adapter", choices=[], elem_id="model", allow_custom_value=True)
    max_tokens = gr.Slider(16, 512, value=128, step=16, label="Answer tokens", elem_id="max-tokens")
    compressed_on = gr.Checkbox(label="Add an LC + KV compression column", value=False)
    policy = gr.Dropdown(label="Eviction policy", choices=[], visible=False, allow_custom_value=True)
    ratio = gr.Slider(0.05, 0.95, value=0.75, step=0.05, label="Evicted fraction", visible=False)
    one_at_a_time = gr.Checkbox(
        label="Time each mode alone (columns answer one after another)", value=True, elem_id="one-at-a-time"
    )
    return Sidebar(collection, collection_info, new_name, create, files, upload_report, model, max_tokens,
                   compressed_on, policy, ratio, one_at_a_time)  # fmt: skip


def _wire_sidebar(demo: gr.Blocks, client: LcragClient, side: Sidebar, status: gr.Markdown,
                  compressed_box: gr.Column) -> None:  # fmt: skip
    demo.load(
        partial(refresh, client),
        [side.collection],
        [side.collection, side.model, side.policy, status],
        api_name="refresh",
    )
    side.collection.change(
        partial(describe_collection, client),
        [side.collection],
        [side.collection_info],
        api_visibility="private",
    )
    side.create.click(
        partial(create_collection, client),
        [side.new_name],
        [side.collection, status],
        api_name="create_collection",
    )
    side.files.upload(
        partial(upload_files, client),
        [side.files, side.collection],
        [side.upload_report, side.collection_info, side.files],
        api_name="upload",
    )
    side.compressed_on.change(
        lambda on: (gr.Column(visible=on), gr.Dropdown(visible=on), gr.Slider(visible=on)),
        [side.compressed_on],
        [compressed_box, side.policy, side.ratio],
        api_visibility="private",
    )


def build(client: LcragClient) -> gr.Blocks:
    """The Blocks app, its handlers bound to `client` (queue configured; mount with `ui.mount`)."""
    # uploads are deleted once stored (`upload_files`); anything else the UI caches goes after an hour
    with gr.Blocks(title="lcrag: RAG vs long context", delete_cache=(CACHE_SWEEP_S, CACHE_SWEEP_S)) as demo:
        gr.Markdown("## lcrag: RAG vs long context, side by side")
        with gr.Row():
            with gr.Column(scale=1, min_width=280):
                side = _sidebar()
            with gr.Column(scale=3):
                question = gr.Textbox(
                    label="Question", placeholder="Ask about your documents", elem_id="question", lines=1
                )
                ask_button = gr.Button("Ask", variant="primary", elem_id="ask")
                status = gr.Markdown(elem_id="status")
                with gr.Row(equal_height=False):
                    with gr.Column():
                        mode_a = gr.Dropdown(MODE_CHOICES, value="rag", label="Column 1", elem_id="mode-a")
                        column_a = _answer_column("a", "Answer 1")
                    with gr.Column():
                        mode_b = gr.Dropdown(MODE_CHOICES, value="lc", label="Column 2", elem_id="mode-b")
                        column_b = _answer_column("b", "Answer 2")
                    with gr.Column(visible=False) as compressed_box:
                        gr.Markdown("**LC + KV compression**")
                        column_c = _answer_column("c", "Answer 3")
                with gr.Row():
                    plots = [_bar_plot(title) for title in views.CHART_METRICS.values()]
                clear = gr.Button("Clear chats", size="sm")
                evaluation = _evaluate_view()

        _wire_sidebar(demo, client, side, status, compressed_box)
        columns = [column_a, column_b, column_c]
        # One listener for all columns (see ui.answers): the page reads the inputs once per ask.
        gr.on(
            [ask_button.click, question.submit],
            partial(ask, client),
            [question, side.collection, side.model, side.max_tokens, mode_a, mode_b,
             side.compressed_on, side.policy, side.ratio, side.one_at_a_time,
             *(column.chat for column in columns)],
            [status, *(widget for column in columns for widget in column.outputs)],
            api_name="ask",
        )  # fmt: skip
        results = [column.result for column in columns]
        gr.on([r.change for r in results], chart, results, plots, api_visibility="private")
        clear.click(
            lambda: [[], "", "", None] * len(columns),
            None,
            [widget for column in columns for widget in column.outputs],
            api_visibility="private",
        )
        evaluation.button.click(
            partial(evaluate, client),
            [side.collection, side.model, evaluation.questions, evaluation.top_k, side.policy, side.ratio],
            [evaluation.report, evaluation.plot],
            api_name="evaluate",
            concurrency_limit=1,  # one evaluation at a time: they share the needle copy and the answer cache
        )
    demo.queue(default_concurrency_limit=QUEUE_CONCURRENCY)
    return demo
