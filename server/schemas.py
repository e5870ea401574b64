"""Request and response models of lcrag's API, declared once."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from compression.spec import KVSpec, OptionValue
from rag.retrieve import Citation, Order, Retrieval
from rag.store import COLLECTION_NAME


class StrictModel(BaseModel):
    """Unknown keys are errors, so a typo never silently turns a feature off."""

    model_config = ConfigDict(extra="forbid")


class LcragOptions(StrictModel):
    """The `lcrag` field of a chat or completion request (an extension of the OpenAI request body)."""

    collection: str | None = Field(
        default=None,
        pattern=COLLECTION_NAME.pattern,
        description="Collection name (3-63 of a-z, 0-9, _ and -).",
    )
    mode: Literal["rag", "lc", "auto"] | None = Field(default=None, description="How the collection is used.")
    top_k: int | None = Field(default=None, ge=1, le=100, description="Chunks to retrieve in rag mode.")
    retrieval: Retrieval | None = Field(
        default=None, description="rag mode: 'dense', 'bm25' or 'hybrid' (default LCRAG_RETRIEVAL)."
    )
    order: Order | None = Field(
        default=None,
        description="rag mode: chunks by 'score' or in 'document' order (default LCRAG_RETRIEVAL_ORDER).",
    )
    min_score: float | None = Field(
        default=None,
        ge=-1.0,
        le=1.0,
        description="rag mode: drop chunks whose cosine similarity is below this.",
    )
    rerank: bool | None = Field(
        default=None, description="rag mode: rerank with the server's cross-encoder (default: if it has one)."
    )
    kv: KVSpec | None = Field(default=None, description="KV-cache eviction for this request.")

    def needs_collection(self) -> str | None:
        """The first field set that only means something with a collection, when none is named (checked
        once a `docs@rag` model name has had its say)."""
        if self.collection is not None:
            return None
        named = ("mode", "top_k", "retrieval", "order", "min_score", "rerank")
        return next((name for name in named if getattr(self, name) is not None), None)


class CollectionCreate(StrictModel):
    name: str = Field(description="3-63 characters from a-z, 0-9, '_' and '-'.")


class DocumentOut(BaseModel):
    doc_id: str
    name: str
    title: str
    chunks: int
    tokens: int
    characters: int | None = Field(
        default=None, description="Length of the text (None if stored before 0.1)."
    )


class ChunkOut(BaseModel):
    index: int
    start: int = Field(description="Character offset of the chunk in the document text.")
    end: int
    page: int | None
    tokens: int
    text: str


class DocumentDetail(DocumentOut):
    text: str = Field(description="The document's text as LC mode shows it (its chunks joined).")
    chunk_list: list[ChunkOut] = Field(description="The document's chunks in order, as RAG retrieves them.")


class CollectionOut(BaseModel):
    name: str
    documents: int
    chunks: int
    tokens: int = Field(description="Tokens of all documents, by the served model's tokenizer.")
    lc_prompt_tokens: int = Field(description="Estimated prompt tokens of the whole collection in lc mode.")
    lc_available_tokens: int = Field(description="max_model_len minus the default answer budget.")
    fits_lc: bool = Field(description="Whether the whole collection fits the served model in lc mode.")


class CollectionList(BaseModel):
    object: Literal["list"] = "list"
    data: list[CollectionOut]


class DocumentList(BaseModel):
    object: Literal["list"] = "list"
    data: list[DocumentOut]


class IngestedFile(BaseModel):
    name: str
    doc_id: str
    status: Literal["added", "skipped", "replaced"]
    chunks: int


class IngestReport(BaseModel):
    files: list[IngestedFile]
    added: int
    replaced: int
    skipped: int
    chunks: int = Field(description="Chunks stored by this upload.")


class QueryRequest(StrictModel):
    query: str = Field(min_length=1)
    top_k: int = Field(default=5, ge=1, le=100)
    doc_id: str | None = Field(default=None, description="Only search this document.")
    mmr_lambda: float | None = Field(
        default=None, ge=0.0, le=1.0, description="MMR trade-off (dense retrieval); 1 = plain top-k."
    )
    retrieval: Retrieval | None = Field(default=None, description="'dense', 'bm25' or 'hybrid'.")
    order: Order | None = Field(default=None, description="'score' (best first) or 'document' order.")
    min_score: float | None = Field(default=None, ge=-1.0, le=1.0, description="Cosine similarity floor.")
    rerank: bool | None = Field(
        default=None, description="Rerank with the server's cross-encoder (default: when it has one)."
    )


class QueryResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[Citation] = Field(
        description="Best first: number, doc_id, title, chunk_index, offsets, page, score."
    )


class Deleted(BaseModel):
    id: str
    deleted: bool = True


class ChatTurn(StrictModel):
    role: Literal["user", "assistant"]
    content: str


class CompareRequest(StrictModel):
    """One question over one collection, answered in several modes at once."""

    question: str = Field(min_length=1, description="The user's question.")
    collection: str = Field(min_length=1, description="Collection to answer from.")
    modes: list[str] = Field(
        default=["rag", "lc"],
        min_length=1,
        max_length=8,
        description="Modes to run concurrently: 'rag', 'lc', 'auto', or with KV eviction 'lc:snapkv-0.75'.",
    )
    model: str | None = Field(default=None, description="Served model or LoRA adapter; default the base.")
    max_tokens: int | None = Field(
        default=None, ge=1, description="Answer tokens per mode; default LCRAG_ANSWER_TOKENS."
    )
    temperature: float = Field(default=0.0, ge=0.0, le=2.0)
    repetition_penalty: float | None = Field(
        default=None, gt=0.0, le=2.0, description="vLLM's repetition penalty (> 1 discourages repeats)."
    )
    system_prompt: str | None = Field(
        default=None, max_length=4000, description="Your instructions, after lcrag's own, in every mode."
    )
    top_k: int | None = Field(default=None, ge=1, le=100, description="Chunks to retrieve in rag mode.")
    retrieval: Retrieval | None = Field(
        default=None, description="rag and auto modes: 'dense', 'bm25' or 'hybrid' (default LCRAG_RETRIEVAL)."
    )
    history: list[ChatTurn] = Field(default=[], description="Earlier turns, sent with every mode.")
    retention: bool = Field(
        default=False,
        description="Compressed lc modes: report which spans of the documents the eviction kept "
        "(`kv.retention` of their results).",
    )
    stream: bool = Field(default=False, description="Server-sent events, each tagged with its mode.")
    timing: Literal["concurrent", "isolated"] = Field(
        default="concurrent",
        description="'concurrent': the modes run at once and share the engine (fastest overall; each mode's "
        "times include the others' work); 'isolated': one after another, each timed from its own start, so "
        "each mode's cost is its own.",
    )

    @model_validator(mode="after")
    def _question_has_text(self) -> CompareRequest:
        if not self.question.strip():
            raise ValueError("'question' is empty")
        return self


class ModeError(BaseModel):
    message: str
    type: str
    code: int


class ModeResult(BaseModel):
    """One mode's answer and what it cost, or its error (other modes are unaffected)."""

    mode: str
    answer: str | None = None
    citations: list[Citation] = []
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    ttft_ms: float | None = Field(
        default=None, description="To the first token, from the compare request (or the mode's own start)."
    )
    total_ms: float | None = Field(
        default=None, description="To the last token, from the compare request (or the mode's own start)."
    )
    retrieval_ms: float | None = None
    queue_ms: float | None = Field(default=None, description="The engine's: waiting to be scheduled.")
    prefill_ms: float | None = Field(
        default=None, description="The engine's: first scheduled to first token (shared steps included)."
    )
    decode_ms: float | None = Field(default=None, description="The engine's: first to last token.")
    kv: dict[str, Any] | None = Field(default=None, description="The answer's `lcrag.kv` field, if any.")
    kv_tokens: int | None = Field(default=None, description="Prompt tokens kept in the KV cache (eviction).")
    kv_blocks: int | None = Field(default=None, description="KV-cache blocks kept (eviction).")
    route: str | None = Field(default=None, description="auto mode: 'rag' or 'lc'.")
    reason: str | None = Field(default=None, description="auto mode: why that route.")
    error: ModeError | None = None


class CompareResponse(BaseModel):
    object: Literal["compare"] = "compare"
    question: str
    collection: str
    model: str
    results: list[ModeResult]


class KVCacheBuild(StrictModel):
    """PUT /v1/collections/{name}/kv-cache: compress the collection's LC context now, for later questions."""

    policy: str = Field(min_length=1, description="A query-agnostic policy (GET /v1/kv/policies).")
    ratio: float = Field(gt=0.0, lt=1.0, description="Fraction of the context's K/V to evict.")
    options: dict[str, OptionValue] | None = Field(default=None, description="Policy options.")
    model: str | None = Field(default=None, description="Served model or LoRA adapter; default the base.")

    def kv(self) -> KVSpec:
        return KVSpec(policy=self.policy, ratio=self.ratio, options=self.options)


class KVCacheOut(BaseModel):
    """One resident compressed context: its policy, sizes before and after, memory and use."""

    digest: str = Field(description="Digest of the context's exact token ids.")
    labels: list[str] = Field(description="Collections whose LC context this is.")
    lora: int = Field(description="LoRA adapter id, 0 for the base model.")
    policy: str = Field(description="The policy with its options (JSON).")
    ratio: float
    tokens_before: int
    tokens_after: int
    blocks: int
    bytes: int
    hits: int = Field(description="Requests that adopted it.")
    in_use: bool = Field(description="Whether running requests hold it now.")
    build_seconds: float
    created_at: float
    last_used_at: float


class KVCacheBuilt(KVCacheOut):
    cache: Literal["hit", "built"] = Field(description="'hit': it was resident already; 'built': made now.")
    build_ms: float = Field(description="Wall time of this call, reconstruction passes included.")
    passes: int = Field(description="Reconstruction passes run before the build (KVzip-style policies).")


class KVCacheList(BaseModel):
    object: Literal["list"] = "list"
    data: list[KVCacheOut]
    cached_contexts: int
    cache_blocks: int
    cache_bytes: int
    free_blocks: int
    total_blocks: int
    block_bytes: int = Field(description="Bytes of one KV-cache block, all layers.")
    block_size: int = Field(description="Tokens per KV-cache block.")
    released_under_pressure: int = Field(description="Idle caches released for memory since start.")
    scored_contexts: list[list[int | str]] = Field(
        default=[],
        description="[lora, policy, digest] of contexts whose reconstruction scores the engine keeps.",
    )
