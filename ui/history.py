"""Chats that survive a reload: each collection's three answer columns, kept in the browser's local storage
(`gr.BrowserState`), restored when the collection is chosen again, forgotten by "New chat"."""

from __future__ import annotations

from typing import Any

import gradio as gr

STORAGE_KEY = "lcrag-chats"
KEPT_MESSAGES = 60  # per column: the newest messages are what a reload brings back
Chat = list[dict[str, Any]]
SavedChats = dict[str, dict[str, Chat]]  # collection -> column key -> messages


def browser_chats() -> gr.BrowserState:
    # the browser holds the chats; the secret only makes Gradio's storage format stable across restarts
    return gr.BrowserState({}, storage_key=STORAGE_KEY, secret="lcrag-ui-chats")


def restore(saved: SavedChats | None, collection: str | None, columns: tuple[str, ...]) -> list[Chat]:
    """The columns' chats saved for `collection` (empty for a new one)."""
    chats = (saved or {}).get(collection or "", {})
    return [list(chats.get(key, [])) for key in columns]


def remember(
    saved: SavedChats | None, collection: str | None, columns: tuple[str, ...], chats: tuple[Chat | None, ...]
) -> SavedChats:
    """`saved` with `collection`'s columns set to `chats` (their newest messages)."""
    updated = dict(saved or {})
    if collection:
        updated[collection] = {
            key: list(chat or [])[-KEPT_MESSAGES:] for key, chat in zip(columns, chats, strict=True)
        }
    return updated


def forget(saved: SavedChats | None, collection: str | None) -> SavedChats:
    return {name: chats for name, chats in (saved or {}).items() if name != collection}
