"""The Gradio side-by-side app, mounted by the server at /ui; it talks to the server only over HTTP."""
