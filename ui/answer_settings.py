"""The Settings accordion: how every column answers (answer length, sampling, retrieval, the user's own
instructions). The sampling defaults were chosen by measurement: `evals/sampling.py`, docs/benchmarks.md
("Sampling defaults for the UI")."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr

RETRIEVAL_CHOICES = [
    ("Server default", ""),
    ("Dense (embeddings)", "dense"),
    ("BM25 (words)", "bm25"),
    ("Hybrid (both)", "hybrid"),
]
# chosen by measurement (`evals/sampling.py`, docs/benchmarks.md "Sampling defaults for the UI")
DEFAULT_TEMPERATURE = 0.0
DEFAULT_REPETITION_PENALTY = 1.0
DEFAULT_TOP_K = 5


@dataclass
class Settings:
    """How every column answers: sampling, retrieval and the user's own instructions."""

    max_tokens: gr.Slider
    temperature: gr.Slider
    repetition_penalty: gr.Slider
    top_k: gr.Slider
    retrieval: gr.Dropdown
    system_prompt: gr.Textbox

    @property
    def inputs(self) -> list[Any]:
        """In `ask`'s order."""
        return [
            self.max_tokens,
            self.temperature,
            self.repetition_penalty,
            self.top_k,
            self.retrieval,
            self.system_prompt,
        ]


def answer_settings() -> Settings:
    with gr.Accordion("Settings", open=False, elem_id="settings"):
        max_tokens = gr.Slider(16, 512, value=128, step=16, label="Answer tokens", elem_id="max-tokens")
        temperature = gr.Slider(
            0.0, 1.5, value=DEFAULT_TEMPERATURE, step=0.05, label="Temperature", elem_id="temperature"
        )
        repetition_penalty = gr.Slider(
            1.0,
            1.5,
            value=DEFAULT_REPETITION_PENALTY,
            step=0.05,
            label="Repetition penalty (1 = off)",
            elem_id="repetition-penalty",
        )
        top_k = gr.Slider(1, 20, value=DEFAULT_TOP_K, step=1, label="RAG chunks (top-k)", elem_id="top-k")
        retrieval = gr.Dropdown(RETRIEVAL_CHOICES, value="", label="RAG retrieval", elem_id="retrieval")
        system_prompt = gr.Textbox(
            label="Your instructions (system prompt, after lcrag's own)",
            lines=2,
            max_length=4000,
            elem_id="system-prompt",
        )
    return Settings(max_tokens, temperature, repetition_penalty, top_k, retrieval, system_prompt)
