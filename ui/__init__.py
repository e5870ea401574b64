"""The Gradio side-by-side app (RAG and LC answers to one question), mounted by the server at /ui.
Built by the UI issue; nothing here yet."""
