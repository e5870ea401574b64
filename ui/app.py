"""The side-by-side UI: drop documents in, ask once, watch the modes answer at the same time with their costs.

A Gradio Blocks app the server mounts at /ui (`ui.mount`). Everything it shows comes from the server's HTTP
API through `LcragClient`: collections and uploads, `/v1/models`, `/v1/kv/policies`, and `/v1/compare`,
streamed, one stream per answer column. One listener asks all columns (`ui.answers` says why), so they
stream at the same time; each keeps its own chat history, sent with its next question.
Every handler turns a failure into a readable line in the page, never a stack trace.
"""

from __future__ import annotations

import contextlib
import html
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import gradio as gr

from evals.collection_questions import KINDS
from lcrag.client import ApiFailure, LcragClient
from ui import history, views
from ui.answer_settings import Settings, answer_settings
from ui.answers import ColumnAnswer, ColumnAsk, Question, merged_events
from ui.documents import (
    DocumentsView,
    ask_to_delete,
    confirm_deletion,
    documents_view,
    list_documents,
    preview_document,
)
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
.citations details:target { outline: 2px solid var(--color-accent); }
"""
# `[n]` in an answer links to `#cite-<column>-<n>`: open that citation and scroll to it, in this page
HEAD = """<script>
document.addEventListener("click", (event) => {
  const link = event.target.closest && event.target.closest('a[href*="#cite-"]');
  if (!link) return;
  const target = document.getElementById(link.getAttribute("href").split("#")[1]);
  if (!target) return;
  event.preventDefault();
  event.stopPropagation();
  target.open = true;
  target.scrollIntoView({block: "center"});
  target.classList.add("cited");
}, true);
</script>"""
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


def budget(client: LcragClient, name: str | None, top_k: float, compressed_on: bool, ratio: float) -> str:
    """The budget line for `name`: LC tokens against the window, KV memory of LC, compressed LC and RAG."""
    if not name:
        return ""
    try:
        info = client.collection(name)
    except ApiFailure as error:
        return views.error_note(error.message)
    ratio_shown = ratio if compressed_on else None
    return views.budget_markdown(info, client.kv_bytes_per_token(), int(top_k), ratio_shown)


def collection_views(
    client: LcragClient, name: str | None, top_k: float, compressed_on: bool, ratio: float
) -> tuple[Any, ...]:
    """Everything that shows the chosen collection: its summary, the documents view and the budget line."""
    return (
        describe_collection(client, name),
        *list_documents(client, name),
        budget(client, name, top_k, compressed_on, ratio),
    )


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
    temperature: float,
    repetition_penalty: float,
    top_k: float,
    retrieval: str | None,
    system_prompt: str | None,
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
    answers = {a.key: ColumnAnswer.open(a.chat, question, a.key) for a in asks}

    def page() -> list[Any]:
        left_alone = [gr.skip()] * OUTPUTS_PER_COLUMN
        columns = (answers[key].outputs() if key in answers else left_alone for key in COLUMN_KEYS)
        return ["", *(value for column in columns for value in column)]

    yield page()
    shared = Question(
        question,
        collection or "",
        model,
        max_tokens,
        temperature,
        repetition_penalty if repetition_penalty != 1.0 else None,
        int(top_k),
        retrieval or None,
        (system_prompt or "").strip() or None,
    )
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
    kinds: gr.CheckboxGroup
    button: gr.Button
    report: gr.Markdown
    plot: gr.Image

    def inputs(self) -> list[Any]:
        """The view's own inputs, in `ui.evaluate.evaluate`'s order."""
        return [self.questions, self.top_k, self.kinds]


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
            kinds = gr.CheckboxGroup(
                list(KINDS), value=list(KINDS), label="Question kinds", elem_id="evaluate-kinds"
            )
        button = gr.Button("Evaluate", elem_id="evaluate-run")
        report = gr.Markdown(elem_id="evaluate-report")
        plot = gr.Image(
            label="Accuracy vs KV memory held", type="pil", interactive=False, elem_id="evaluate-plot"
        )
    return EvaluateView(questions, top_k, kinds, button, report, plot)


@dataclass
class Sidebar:
    """Collection, documents, model, settings and KV-compression pickers."""

    collection: gr.Dropdown
    collection_info: gr.Markdown
    new_name: gr.Textbox
    create: gr.Button
    files: gr.File
    upload_report: gr.Markdown
    documents: DocumentsView
    model: gr.Dropdown
    settings: Settings
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
    documents = documents_view()
    model = gr.Dropdown(label="Model / adapter", choices=[], elem_id="model", allow_custom_value=True)
    settings = answer_settings()
    compressed_on = gr.Checkbox(
        label="Add an LC + KV compression column", value=False, elem_id="compressed-on"
    )
    policy = gr.Dropdown(label="Eviction policy", choices=[], visible=False, allow_custom_value=True)
    ratio = gr.Slider(0.05, 0.95, value=0.75, step=0.05, label="Evicted fraction", visible=False)
    one_at_a_time = gr.Checkbox(
        label="Time each mode alone (columns answer one after another)", value=True, elem_id="one-at-a-time"
    )
    return Sidebar(
        collection,
        collection_info,
        new_name,
        create,
        files,
        upload_report,
        documents,
        model,
        settings,
        compressed_on,
        policy,
        ratio,
        one_at_a_time,
    )


def _wire_sidebar(
    demo: gr.Blocks,
    client: LcragClient,
    side: Sidebar,
    status: gr.Markdown,
    compressed_box: gr.Column,
    budget_line: gr.Markdown,
) -> None:
    docs = side.documents
    shown = [side.collection_info, docs.table, docs.pick, docs.preview, docs.names, budget_line]
    show_inputs = [side.collection, side.settings.top_k, side.compressed_on, side.ratio]
    show_collection = partial(collection_views, client)
    demo.load(
        partial(refresh, client),
        [side.collection],
        [side.collection, side.model, side.policy, status],
        api_name="refresh",
    )
    side.collection.change(show_collection, show_inputs, shown, api_visibility="private")
    gr.on(
        [side.settings.top_k.release, side.compressed_on.change, side.ratio.release],
        partial(budget, client),
        show_inputs,
        [budget_line],
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
    ).then(show_collection, show_inputs, shown, api_visibility="private")
    docs.pick.change(
        partial(preview_document, client), [side.collection, docs.pick], [docs.preview], api_name="document"
    )
    confirm_outputs = [docs.pending, docs.confirm_row, docs.confirm_text]
    for button, whole in ((docs.delete_document, False), (docs.delete_collection, True)):
        button.click(
            partial(ask_to_delete, whole),
            [side.collection, docs.pick, docs.names],
            confirm_outputs,
            api_visibility="private",
        )
    docs.cancel.click(
        lambda: (None, gr.Row(visible=False), ""), None, confirm_outputs, api_visibility="private"
    )
    docs.confirm.click(
        partial(confirm_deletion, client),
        [docs.pending],
        [docs.pending, docs.confirm_row, status],
        api_name="delete",
    ).then(
        partial(refresh, client),
        [side.collection],
        [side.collection, side.model, side.policy, status],
        api_visibility="private",
    ).then(show_collection, show_inputs, shown, api_visibility="private")
    side.compressed_on.change(
        lambda on: (gr.Column(visible=on), gr.Dropdown(visible=on), gr.Slider(visible=on)),
        [side.compressed_on],
        [compressed_box, side.policy, side.ratio],
        api_visibility="private",
    )


def _wire_chats(
    client: LcragClient,
    side: Sidebar,
    columns: list[AnswerColumn],
    saved: gr.BrowserState,
    ask_button: gr.Button,
    question: gr.Textbox,
    stop: gr.Button,
    new_chat: gr.Button,
    status: gr.Markdown,
    modes: tuple[gr.Dropdown, gr.Dropdown],
) -> None:
    """Asking, stopping, and the chats kept in the browser per collection (restored when it is chosen)."""
    chats = [column.chat for column in columns]
    column_outputs = [widget for column in columns for widget in column.outputs]

    # Says which collection's chats the page has restored (an empty element; browser tests wait on it).
    restored_marker = gr.HTML("", elem_id="chats-restored")

    def restore(stored: history.SavedChats | None, collection: str | None) -> list[Any]:
        restored = history.restore(stored, collection, COLUMN_KEYS)
        marker = f'<span data-collection="{html.escape(collection or "", quote=True)}"></span>'
        return [*(value for chat in restored for value in (chat, "", "", None)), marker]

    def remember(stored: history.SavedChats | None, collection: str | None, *current: Any) -> Any:
        return history.remember(stored, collection, COLUMN_KEYS, current)

    def start_over(stored: history.SavedChats | None, collection: str | None) -> list[Any]:
        return [history.forget(stored, collection), *([[], "", "", None] * len(columns))]

    side.collection.change(
        restore, [saved, side.collection], [*column_outputs, restored_marker], api_visibility="private"
    )
    # One listener for all columns (see ui.answers): the page reads the inputs once per ask.
    asking = gr.on(
        [ask_button.click, question.submit],
        partial(ask, client),
        [
            question,
            side.collection,
            side.model,
            *side.settings.inputs,
            *modes,
            side.compressed_on,
            side.policy,
            side.ratio,
            side.one_at_a_time,
            *chats,
        ],
        [status, *column_outputs],
        api_name="ask",
    )
    asking.then(remember, [saved, side.collection, *chats], [saved], api_visibility="private")
    stop.click(
        remember, [saved, side.collection, *chats], [saved], cancels=[asking], api_visibility="private"
    )
    new_chat.click(start_over, [saved, side.collection], [saved, *column_outputs], api_visibility="private")


def build(client: LcragClient) -> gr.Blocks:
    """The Blocks app, its handlers bound to `client` (queue configured; mount with `ui.mount`)."""
    # uploads are deleted once stored (`upload_files`); anything else the UI caches goes after an hour
    with gr.Blocks(title="lcrag: RAG vs long context", delete_cache=(CACHE_SWEEP_S, CACHE_SWEEP_S)) as demo:
        saved = history.browser_chats()
        gr.Markdown("## lcrag: RAG vs long context, side by side")
        with gr.Row():
            with gr.Column(scale=1, min_width=280):
                side = _sidebar()
            with gr.Column(scale=3):
                question = gr.Textbox(
                    label="Question", placeholder="Ask about your documents", elem_id="question", lines=1
                )
                with gr.Row():
                    ask_button = gr.Button("Ask", variant="primary", elem_id="ask", scale=3)
                    stop = gr.Button("Stop", variant="stop", elem_id="stop", scale=1)
                    new_chat = gr.Button("New chat", elem_id="new-chat", scale=1)
                budget_line = gr.Markdown(elem_id="budget")
                status = gr.Markdown(elem_id="status")
                with gr.Row(equal_height=False):
                    with gr.Column(min_width=300):
                        mode_a = gr.Dropdown(MODE_CHOICES, value="rag", label="Column 1", elem_id="mode-a")
                        column_a = _answer_column("a", "Answer 1")
                    with gr.Column(min_width=300):
                        mode_b = gr.Dropdown(MODE_CHOICES, value="lc", label="Column 2", elem_id="mode-b")
                        column_b = _answer_column("b", "Answer 2")
                    with gr.Column(visible=False, min_width=300) as compressed_box:
                        gr.Markdown("**LC + KV compression**")
                        column_c = _answer_column("c", "Answer 3")
                with gr.Row():
                    plots = [_bar_plot(title) for title in views.CHART_METRICS.values()]
                evaluation = _evaluate_view()

        _wire_sidebar(demo, client, side, status, compressed_box, budget_line)
        columns = [column_a, column_b, column_c]
        _wire_chats(
            client, side, columns, saved, ask_button, question, stop, new_chat, status, (mode_a, mode_b)
        )
        results = [column.result for column in columns]
        gr.on([r.change for r in results], chart, results, plots, api_visibility="private")
        evaluation.button.click(
            partial(evaluate, client),
            [side.collection, side.model, *evaluation.inputs(), side.policy, side.ratio],
            [evaluation.report, evaluation.plot],
            api_name="evaluate",
            concurrency_limit=1,  # one evaluation at a time: they share the needle copy and the answer cache
        )
    demo.queue(default_concurrency_limit=QUEUE_CONCURRENCY)
    return demo
