"""Mount the UI on a FastAPI app (the lcrag server's own, so it shares its process and port)."""

from __future__ import annotations

import os

from fastapi import FastAPI

UI_PATH = "/ui"


def mount_ui(app: FastAPI, base_url: str, api_key: str | None, max_upload_mb: int) -> None:
    """Serve the UI at /ui; its handlers call the server's HTTP API at `base_url` with `api_key`. Gradio
    refuses an upload over `max_upload_mb` itself, before the file reaches its temporary folder."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # offline: no telemetry calls
    import gradio as gr

    from lcrag.client import LcragClient
    from ui.app import CSS, HEAD, THEME, build

    gr.mount_gradio_app(
        app,
        build(LcragClient(base_url, api_key)),
        path=UI_PATH,
        theme=THEME,
        css=CSS,
        head=HEAD,
        footer_links=["api"],
        max_file_size=max_upload_mb * 1_000_000,
        run_history=False,
        show_error=False,  # handlers report failures in the page; anything else stays in the server log
    )
