"""The documents view: a collection's documents (characters, chunks, tokens), one document's chunks as RAG
retrieves them, and deleting a document or the whole collection after a confirmation step.

Deleting takes two clicks: the first names what would go and shows "Yes, delete" / "Cancel"; the pending
deletion waits in a `gr.State`, so nothing is deleted by a stray click or a stale page.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Any

import gradio as gr
import pandas as pd

from lcrag.client import ApiFailure, LcragClient
from ui import views

COLUMNS = ["document", "characters", "chunks", "tokens"]


@dataclass(frozen=True)
class PendingDeletion:
    """What the confirmation step would delete: a document (with `doc_id`) or the collection."""

    collection: str
    doc_id: str | None = None
    name: str = ""

    @property
    def question(self) -> str:
        if self.doc_id:
            return f"Delete **{self.name}** from **{self.collection}**? Its chunks go too."
        return f"Delete the collection **{self.collection}** and all its documents? This cannot be undone."


def documents_frame(documents: list[dict[str, Any]]) -> pd.DataFrame:
    rows = [[d["name"], d.get("characters"), d["chunks"], d["tokens"]] for d in documents]
    return pd.DataFrame(rows, columns=COLUMNS)


def chunks_html(document: dict[str, Any]) -> str:
    """A document's chunks, each with its index, character offsets, page and tokens, text escaped."""
    items = []
    for chunk in document["chunk_list"]:
        page = f" · page {chunk['page']}" if chunk.get("page") else ""
        offsets = f"characters {chunk['start']}-{chunk['end']}"
        head = f"chunk {chunk['index']} · {offsets}{page} · {chunk['tokens']} tokens"
        items.append(
            f"<details class='doc-chunk'><summary>{html.escape(head)}</summary>"
            f"<div class='chunk'>{html.escape(chunk['text'])}</div></details>"
        )
    title = html.escape(f"{document['title']} ({document['chunks']} chunks, {document['tokens']} tokens)")
    return f"<div class='citations'><p><b>{title}</b></p>{''.join(items)}</div>"


def list_documents(client: LcragClient, collection: str | None) -> tuple[Any, Any, str, dict[str, str]]:
    """The table, the document picker, the preview (cleared) and the documents' names by id."""
    documents: list[dict[str, Any]] = []
    note = ""
    if collection:
        try:
            documents = client.documents(collection)
        except ApiFailure as error:
            note = views.error_note(error.message)
    names = {d["doc_id"]: d["name"] for d in documents}
    picker = gr.Dropdown(choices=[(name, doc_id) for doc_id, name in names.items()], value=None)
    return documents_frame(documents), picker, note, names


def preview_document(client: LcragClient, collection: str | None, doc_id: str | None) -> str:
    if not collection or not doc_id:
        return ""
    try:
        return chunks_html(client.document(collection, doc_id))
    except ApiFailure as error:
        return views.error_note(error.message)


def ask_to_delete(
    whole: bool, collection: str | None, doc_id: str | None, names: dict[str, str] | None
) -> tuple[PendingDeletion | None, Any, str]:
    """The confirmation step: what would be deleted, the confirm row shown, its question."""
    if not collection:
        return None, gr.Row(visible=False), views.error_note("Choose a collection first.")
    if not whole and not doc_id:
        return None, gr.Row(visible=False), views.error_note("Choose a document to delete first.")
    name = (names or {}).get(doc_id or "", doc_id or "")
    pending = PendingDeletion(collection, None if whole else doc_id, name)
    return pending, gr.Row(visible=True), pending.question


def confirm_deletion(client: LcragClient, pending: PendingDeletion | None) -> tuple[None, Any, str]:
    """Delete what the confirmation step named; the confirm row hides, the status line says what happened."""
    if pending is None:
        return None, gr.Row(visible=False), ""
    try:
        if pending.doc_id:
            client.delete_document(pending.collection, pending.doc_id)
            done = f"Deleted **{pending.name}** from **{pending.collection}**."
        else:
            client.delete_collection(pending.collection)
            done = f"Deleted the collection **{pending.collection}**."
    except ApiFailure as error:
        return None, gr.Row(visible=False), views.error_note(error.message)
    return None, gr.Row(visible=False), done


@dataclass
class DocumentsView:
    table: gr.Dataframe
    pick: gr.Dropdown
    preview: gr.HTML
    delete_document: gr.Button
    delete_collection: gr.Button
    confirm_row: gr.Row
    confirm_text: gr.Markdown
    confirm: gr.Button
    cancel: gr.Button
    pending: gr.State
    names: gr.State


def documents_view() -> DocumentsView:
    with gr.Accordion("Documents", open=False, elem_id="documents"):
        table = gr.Dataframe(
            value=documents_frame([]),
            headers=COLUMNS,
            interactive=False,
            elem_id="documents-table",
            show_label=False,
            max_height=260,
        )
        pick = gr.Dropdown(label="Document", choices=[], elem_id="document-pick", allow_custom_value=True)
        preview = gr.HTML(elem_id="document-preview")
        with gr.Row():
            delete_document = gr.Button(
                "Delete document", size="sm", variant="stop", elem_id="delete-document"
            )
            delete_collection = gr.Button(
                "Delete collection", size="sm", variant="stop", elem_id="delete-collection"
            )
        with gr.Row(visible=False, elem_id="confirm-row") as confirm_row:
            confirm_text = gr.Markdown(elem_id="confirm-text")
            confirm = gr.Button("Yes, delete", size="sm", variant="stop", elem_id="confirm-delete")
            cancel = gr.Button("Cancel", size="sm", elem_id="cancel-delete")
        pending, names = gr.State(None), gr.State({})
    return DocumentsView(
        table,
        pick,
        preview,
        delete_document,
        delete_collection,
        confirm_row,
        confirm_text,
        confirm,
        cancel,
        pending,
        names,
    )
