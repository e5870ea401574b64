"""The `lcrag` command line: serve, model prepare, ingest, ask, collections, finetune."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from finetune.holdout import HOLDOUT_SHARE
from lcrag.logs import configure_logging
from lcrag.settings import Settings, SettingsError, load_settings

if TYPE_CHECKING:
    from rag.ingest import SourceFile

app = typer.Typer(
    help="lcrag: answer questions over document collections with RAG or long context.",
    no_args_is_help=True,
    add_completion=False,
)
model_app = typer.Typer(help="Manage the model lcrag serves.", no_args_is_help=True)
app.add_typer(model_app, name="model")
adapters_app = typer.Typer(
    help="LoRA adapters: list them, load into or unload from a running server.", no_args_is_help=True
)
app.add_typer(adapters_app, name="adapters")

DataDirOption = Annotated[
    Path | None,
    typer.Option("--data-dir", help="Data folder (collections, adapters). Env: LCRAG_DATA_DIR."),
]
ModelCacheOption = Annotated[
    Path | None,
    typer.Option(help="Folder of prepared models, shared by every data dir. Env: LCRAG_MODEL_CACHE."),
]
EmbedderOption = Annotated[
    Path | None, typer.Option(help="Local sentence-transformers model folder. Env: LCRAG_EMBEDDER.")
]
CPU_KV_CACHE_DEFAULT_GB = 4


def _settings(**flags: object) -> Settings:
    try:
        return load_settings(**flags)
    except SettingsError as error:
        typer.echo(str(error), err=True)
        raise typer.Exit(code=2) from None


def _fail(message: str) -> None:
    typer.echo(f"Error: {message}", err=True)
    raise typer.Exit(code=1)


@model_app.command("prepare")
def model_prepare(
    model_cache: ModelCacheOption = None,
    force: Annotated[bool, typer.Option(help="Convert again even if already prepared.")] = False,
    context: Annotated[
        int | None,
        typer.Option(help="Also prepare a YaRN-extended copy for this many tokens (16384, 32768)."),
    ] = None,
) -> None:
    """Convert the bundled SmolLM2-135M-Instruct GGUF into a checkpoint vLLM serves (once per model cache)."""
    from lcrag.context_extension import ContextExtensionError, prepare_extended_model
    from lcrag.default_model import ModelPrepareError, default_model_dir, is_prepared, prepare_default_model

    settings = _settings(model_cache=model_cache)
    target = default_model_dir(settings.models_dir)
    if is_prepared(target) and not force:
        typer.echo(f"Default model ready: {target}")
    else:
        try:
            target = prepare_default_model(settings.models_dir, force=force)
        except ModelPrepareError as error:
            _fail(str(error))
        typer.echo(f"Default model prepared: {target}")
    if context is not None:
        try:
            extended = prepare_extended_model(target, context)
        except ContextExtensionError as error:
            _fail(str(error))
        typer.echo(f"{context}-token model ready: {extended} (lcrag serve --model {extended.name})")


@model_app.command("list")
def model_list(model_cache: ModelCacheOption = None) -> None:
    """The models in the model cache, each servable as `lcrag serve --model NAME`."""
    from lcrag.model_cache import cached_models, models_table

    settings = _settings(model_cache=model_cache)
    models = cached_models(settings.models_dir)
    if not models:
        typer.echo(f"No models in {settings.models_dir}; `lcrag model prepare` converts the bundled one.")
        return
    typer.echo(models_table(models))


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def serve(
    ctx: typer.Context,
    model: Annotated[
        str | None,
        typer.Option(help="HF model folder, a name from `lcrag model list`, or a hub id. Env: LCRAG_MODEL."),
    ] = None,
    host: Annotated[str | None, typer.Option(help="Listen address. Env: LCRAG_HOST.")] = None,
    port: Annotated[int | None, typer.Option(help="Listen port. Env: LCRAG_PORT.")] = None,
    api_key: Annotated[
        str | None,
        typer.Option(
            help="Require this bearer token (visible in `ps`: prefer --api-key-file). Env: LCRAG_API_KEY."
        ),
    ] = None,
    api_key_file: Annotated[
        Path | None, typer.Option(help="Read the bearer token from this file. Env: LCRAG_API_KEY_FILE.")
    ] = None,
    max_model_len: Annotated[
        int | None, typer.Option(help="Context length. Env: LCRAG_MAX_MODEL_LEN.")
    ] = None,
    kv_cache_gb: Annotated[int | None, typer.Option(help="KV cache GiB. Env: LCRAG_KV_CACHE_GB.")] = None,
    enable_lora: Annotated[
        bool | None,
        typer.Option("--enable-lora/--no-enable-lora", help="Serve LoRA adapters. Env: LCRAG_ENABLE_LORA."),
    ] = None,
    chroma_url: Annotated[
        str | None, typer.Option(help="Use a `chroma run` server (http://host:port). Env: LCRAG_CHROMA_URL.")
    ] = None,
    kv_eviction: Annotated[
        bool | None,
        typer.Option(
            "--kv-eviction/--no-kv-eviction",
            help="Load KV-cache eviction into vLLM (on by default). Env: LCRAG_KV_EVICTION.",
        ),
    ] = None,
    kv_policy: Annotated[
        str | None, typer.Option(help="Default eviction policy (GET /v1/kv/policies). Env: LCRAG_KV_POLICY.")
    ] = None,
    kv_ratio: Annotated[
        float | None, typer.Option(help="Default fraction of prompt K/V to evict. Env: LCRAG_KV_RATIO.")
    ] = None,
    context_extension: Annotated[
        str | None,
        typer.Option(
            metavar="yarn:FACTOR",
            help="Serve past the window with YaRN RoPE scaling (yarn:2). Env: LCRAG_CONTEXT_EXTENSION.",
        ),
    ] = None,
    embedder: EmbedderOption = None,
    reranker: Annotated[
        Path | None,
        typer.Option(help="Local cross-encoder folder: rerank rag mode's chunks. Env: LCRAG_RERANKER."),
    ] = None,
    data_dir: DataDirOption = None,
    model_cache: ModelCacheOption = None,
) -> None:
    """Start the OpenAI-compatible server. Flags after the known ones are passed to vLLM as they are."""
    settings = _settings(
        model=model,
        host=host,
        port=port,
        api_key=api_key,
        api_key_file=api_key_file,
        max_model_len=max_model_len,
        kv_cache_gb=kv_cache_gb,
        enable_lora=enable_lora,
        chroma_url=chroma_url,
        kv_eviction=kv_eviction,
        kv_policy=kv_policy,
        kv_ratio=kv_ratio,
        embedder=embedder,
        reranker=reranker,
        data_dir=data_dir,
        model_cache=model_cache,
        context_extension=context_extension,
    )
    configure_logging(settings.log_level)
    model_path, served_name = _resolve_model(settings)
    _prepare_vllm_environment(settings, local_model=Path(model_path).is_dir())
    extra = list(ctx.args)
    if settings.context_extension:
        from lcrag.context_extension import ContextExtensionError, extension_args

        if not Path(model_path).is_dir():
            _fail("--context-extension needs a local model folder (its config.json says the window)")
        try:
            extra += extension_args(settings.context_extension, Path(model_path), settings.max_model_len)
        except ContextExtensionError as error:
            _fail(str(error))

    import uvloop

    from compression.vllm_integration.version import UnsupportedEngineError
    from rag.errors import RagError
    from server.app import bind_cpu_threads, check_eviction_parallelism, vllm_args
    from server.app import serve as serve_app

    args = vllm_args(settings, model_path, served_name, extra)
    try:
        check_eviction_parallelism(args)
    except UnsupportedEngineError as error:
        _fail(str(error))
    bind_cpu_threads(args)
    try:
        uvloop.run(serve_app(settings, args))
    except RagError as error:  # the collection store is in use or unreadable
        _fail(str(error))


@app.command()
def ingest(
    paths: Annotated[
        list[Path], typer.Argument(help="Files and folders (searched recursively).", exists=True)
    ],
    collection: Annotated[
        str, typer.Option("--collection", "-c", help="Collection to add to (created if new).")
    ],
    model: Annotated[
        str | None, typer.Option(help="Model whose tokenizer sizes chunks. Env: LCRAG_MODEL.")
    ] = None,
    chroma_url: Annotated[
        str | None, typer.Option(help="A `chroma run` server. Env: LCRAG_CHROMA_URL.")
    ] = None,
    embedder: EmbedderOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Add documents to a collection, file by file (an interrupted run resumes where it stopped)."""
    from rag.errors import RagError
    from rag.ingest import supported_files

    settings = _settings(model=model, chroma_url=chroma_url, embedder=embedder, data_dir=data_dir)
    configure_logging(settings.log_level)
    files = supported_files(paths)
    try:
        ingestor = _local_ingestor(settings, collection)
    except RagError as error:
        _fail(str(error))
    refused = _ingest_with_progress(ingestor, collection, files)
    if refused:
        raise typer.Exit(code=1)


ServerUrlOption = Annotated[
    str | None, typer.Option("--url", help="Server URL (default from host and port).")
]
ApiKeyOption = Annotated[str | None, typer.Option(help="The server's API key. Env: LCRAG_API_KEY.")]


@app.command(name="ask")
def ask_command(
    question: Annotated[str, typer.Argument(help="The question.")],
    collection: Annotated[str, typer.Option("--collection", "-c", help="Collection to answer from.")],
    mode: Annotated[str, typer.Option(help="rag, lc, or both (side by side).")] = "both",
    max_tokens: Annotated[int, typer.Option(help="Longest answer, in tokens.")] = 256,
    url: ServerUrlOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """Ask a running server a question over a collection; streams the answer(s) with citations and timings."""
    from lcrag.ask import MODES, ask

    if mode not in (*MODES, "both"):
        _fail(f"--mode must be rag, lc or both, not {mode!r}.")
    settings = _settings(api_key=api_key)
    secret = settings.api_key.get_secret_value() if settings.api_key else None
    try:
        answered = ask(url or settings.base_url, secret, question, collection, mode, max_tokens)
    except Exception as error:  # connection errors and the like, shown in one line
        _fail(f"could not ask the server at {url or settings.base_url}: {error}")
    if not answered:
        raise typer.Exit(code=1)


@app.command()
def collections(url: ServerUrlOption = None, api_key: ApiKeyOption = None) -> None:
    """List a running server's collections with their sizes and whether each fits lc mode."""
    from lcrag.ask import print_collections

    settings = _settings(api_key=api_key)
    try:
        print_collections(
            url or settings.base_url, settings.api_key.get_secret_value() if settings.api_key else None
        )
    except Exception as error:
        _fail(f"could not list collections at {url or settings.base_url}: {error}")


EVAL_SUITES = {
    "cache-reuse": "evals.cache_reuse",  # four questions per context: one cache vs per-question eviction
    "collection": "evals.collection",  # held-out questions from your own collection, in every mode
    "compression": "evals.compression_sweep",  # needle accuracy vs KV eviction ratio, per policy
    "kv-retrieval": "evals.finetune_kv_retrieval",  # a kv_retrieval LoRA before/after, by gold position
    "lc-vs-rag": "evals.lc_vs_rag",  # HotpotQA and SQuAD in every mode: accuracy vs KV memory and time
    "niah": "evals.niah",  # needle depth x length heatmap in the essays, per eviction configuration
    "position": "evals.position",  # lost in the middle: accuracy by gold position, base vs adapters
    "reproduce": "evals.reproduce",  # the fine-tuning papers' findings in miniature: train, then evaluate
    "retrieval": "evals.retrieval",  # recall@k of the gold paragraphs: dense, BM25 and hybrid retrieval
    "ruler": "evals.ruler",  # RULER's 13 tasks per policy and ratio, question inside/outside
    "sampling": "evals.sampling",  # the UI's sampling defaults: answer accuracy and looping per setting
    "val": "evals.val",  # IN2's VaL probes: document, code and table retrieval by depth, base vs adapters
}


@app.command(
    name="eval",
    add_help_option=False,
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
)
def eval_command(
    ctx: typer.Context,
    suite: Annotated[str, typer.Argument(help=f"One of: {', '.join(EVAL_SUITES)}.")],
) -> None:
    """Run an evaluation suite on the bundled (or --model) model: `lcrag eval SUITE --help` for its options.
    Results (JSON, Markdown, PNG) go to --out; answers are cached there, so a rerun fills only the gaps."""
    import importlib
    import sys

    module = EVAL_SUITES.get(suite)
    if module is None:
        _fail(f"unknown eval suite {suite!r}; available: {', '.join(EVAL_SUITES)}.")
    sys.argv = [f"lcrag eval {suite}", *ctx.args]
    importlib.import_module(str(module)).main()


@app.command()
def finetune(
    recipe: Annotated[
        str, typer.Option(help="kv_retrieval | in2 | multidoc (in2 and multidoc need --collection).")
    ],
    out: Annotated[str, typer.Option(help="Adapter name (a folder under <data dir>/adapters).")],
    steps: Annotated[int, typer.Option(help="Optimizer steps.")] = 100,
    collection: Annotated[
        str | None, typer.Option(help="Collection whose documents feed the recipe.")
    ] = None,
    method: Annotated[
        str, typer.Option(help="sft | grpo (grpo: multidoc, rewarded by its scorers).")
    ] = "sft",
    compression: Annotated[
        str | None,
        typer.Option(help="Train against an evicted KV cache, POLICY-RATIO (e.g. snapkv-0.75); SFT only."),
    ] = None,
    target: Annotated[
        str, typer.Option(help="multidoc target: answer | ids | ids+content | ids+quotes.")
    ] = "ids+quotes",
    examples: Annotated[int, typer.Option(help="Training examples to generate.")] = 64,
    context_tokens: Annotated[int, typer.Option(help="Context length of each example, in tokens.")] = 2048,
    learning_rate: Annotated[float, typer.Option(help="LoRA learning rate.")] = 2e-4,
    holdout: Annotated[
        float,
        typer.Option(help="Share of the collection held out for `lcrag eval collection` (0: train on all)."),
    ] = HOLDOUT_SHARE,
    resume: Annotated[
        bool,
        typer.Option(help="Continue an interrupted run of --out (same options) from its last checkpoint."),
    ] = False,
    precision: Annotated[
        str,
        typer.Option(help="auto | fp32 | bf16 (auto: bf16 on a GPU or on a CPU with AMX, else fp32)."),
    ] = "auto",
    model: Annotated[str | None, typer.Option(help="Base model folder. Env: LCRAG_MODEL.")] = None,
    data_dir: DataDirOption = None,
) -> None:
    """Train a LoRA adapter on synthetic long-context data (from your collection for in2 and multidoc)."""
    from finetune.compression_aware import parse_compression
    from finetune.run import FinetuneRequest
    from finetune.run import finetune as run_finetune
    from rag.errors import RagError

    settings = _settings(model=model, data_dir=data_dir)
    configure_logging(settings.log_level)
    model_path, _ = _resolve_model(settings)
    try:
        request = FinetuneRequest(
            recipe, Path(model_path), settings.adapters_dir / out, steps, examples, context_tokens,
            learning_rate, corpus=_collection_corpus(settings, collection, holdout) if collection else None,
            method=method, compression=parse_compression(compression) if compression else None,
            target=target, resume=resume, precision=precision,
        )  # fmt: skip
        request.check()
        result = run_finetune(request)
    except (ValueError, RagError) as error:
        _fail(str(error))
    progress = (
        f"reward {result.rewards[0]:.3f} -> {result.rewards[-1]:.3f}"
        if result.rewards
        else f"loss {result.losses[0]:.3f} -> {result.losses[-1]:.3f}"
    )
    typer.echo(
        f"Adapter {out!r} written to {result.adapter_dir}: {result.steps} steps, {progress}, "
        f"{result.tokens_per_s:.0f} tokens/s on {result.device} ({result.precision})."
    )


def _adapter_client(url: str | None, api_key: str | None, data_dir: Path | None):
    from lcrag.client import connect

    settings = _settings(api_key=api_key, data_dir=data_dir)
    secret = settings.api_key.get_secret_value() if settings.api_key else None
    return settings, connect(url or settings.base_url, secret, timeout=120)


def _talk_to_server(action, *args: object) -> None:
    """Run an adapters action against the server; its refusal or a network error ends the command."""
    import httpx

    from finetune.adapters import AdapterError

    try:
        action(*args)
    except (AdapterError, httpx.HTTPError) as error:
        _fail(str(error))


@adapters_app.command("list")
def adapters_list(
    url: ServerUrlOption = None, api_key: ApiKeyOption = None, data_dir: DataDirOption = None
) -> None:
    """Adapters in the data dir, and whether the server has each loaded."""
    import httpx

    from finetune.adapters import AdapterError, local_adapters, served_models

    settings, client = _adapter_client(url, api_key, data_dir)
    try:
        loaded = {model["id"] for model in served_models(client)}
    except (httpx.HTTPError, AdapterError):
        loaded = None
    for adapter in local_adapters(settings.adapters_dir):
        state = "?" if loaded is None else ("loaded" if adapter.name in loaded else "not loaded")
        card = adapter.card
        typer.echo(f"{adapter.name}\t{state}\trecipe={card.get('recipe')} steps={card.get('steps')}")


@adapters_app.command("load")
def adapters_load(
    name: str, url: ServerUrlOption = None, api_key: ApiKeyOption = None, data_dir: DataDirOption = None
) -> None:
    """Load adapter NAME into the running server (chat with it as model=NAME)."""
    from finetune.adapters import load

    settings, client = _adapter_client(url, api_key, data_dir)
    _talk_to_server(load, client, settings.adapters_dir, name)
    typer.echo(f"Loaded {name!r}: use model={name!r} (or '{name}/<collection>@rag').")


@adapters_app.command("unload")
def adapters_unload(
    name: str, url: ServerUrlOption = None, api_key: ApiKeyOption = None, data_dir: DataDirOption = None
) -> None:
    """Unload adapter NAME from the running server."""
    from finetune.adapters import unload

    _, client = _adapter_client(url, api_key, data_dir)
    _talk_to_server(unload, client, name)
    typer.echo(f"Unloaded {name!r}.")


def _collection_corpus(settings: Settings, collection: str, holdout_share: float):
    """The collection as training material; unknown collections fail here, before any model loads."""
    from finetune.collection import CollectionCorpus
    from rag.embeddings import Embedder
    from rag.store import Store

    store = Store.open(path=str(settings.chroma_dir), url=settings.chroma_url)
    store.require_collection(collection)
    if not 0.0 <= holdout_share < 1.0:
        raise ValueError("--holdout must be a fraction in [0, 1).")
    return CollectionCorpus(store, Embedder(settings.embedder), collection, holdout_share=holdout_share)


def _local_ingestor(settings: Settings, collection: str):
    from transformers import AutoTokenizer

    from rag.embeddings import Embedder
    from rag.errors import CollectionNotFoundError
    from rag.ingest import Ingestor
    from server.services import open_store

    store = open_store(settings)
    try:
        store.documents(collection)
    except CollectionNotFoundError:
        store.create_collection(collection)
    model_path, _ = _resolve_model(settings)
    return Ingestor(store, Embedder(settings.embedder), AutoTokenizer.from_pretrained(model_path))


def _ingest_with_progress(ingestor, collection: str, files: list[SourceFile]) -> int:
    """Ingest with a progress bar (files, chunks/s) and one line per file; returns the number refused."""
    import time

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from rag.ingest import ingest_files

    console = Console(stderr=True)
    stored_chunks, refused, started = 0, 0, time.perf_counter()
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task("Ingesting", total=len(files), rate="")
        for outcome in ingest_files(ingestor, collection, files):
            if outcome.result is None:
                refused += 1
                console.print(f"refused {outcome.path}: {outcome.error}", soft_wrap=True, markup=False)
            else:
                if outcome.result.status != "skipped":
                    stored_chunks += outcome.result.chunks
                typer.echo(f"{outcome.result.status} {outcome.path} ({outcome.result.chunks} chunks)")
            elapsed = time.perf_counter() - started
            progress.update(task, advance=1, rate=f"{stored_chunks / elapsed:.1f} chunks/s")
    elapsed = time.perf_counter() - started
    rate = stored_chunks / max(elapsed, 1e-9)
    typer.echo(
        f"{len(files) - refused} files, {stored_chunks} new chunks in {elapsed:.1f}s ({rate:.1f} chunks/s) "
        f"into '{collection}'; {refused} refused."
    )
    return refused


def _resolve_model(settings: Settings) -> tuple[str, str]:
    """The model to load and the name clients call it by; prepares the default model if needed."""
    if settings.model is None:
        from lcrag.default_model import DEFAULT_MODEL_NAME, ModelPrepareError, prepare_default_model

        try:
            path = prepare_default_model(settings.models_dir)
        except ModelPrepareError as error:
            _fail(str(error))
        return str(path), settings.served_model_name or DEFAULT_MODEL_NAME
    local = Path(settings.model).expanduser()
    cached = settings.models_dir / settings.model
    if not local.is_dir() and "/" not in settings.model and (cached / "config.json").is_file():
        local = cached  # a name from `lcrag model list`
    if local.is_dir():
        if not (local / "config.json").is_file():
            _fail(f"--model {local} has no config.json: pass a Hugging Face model directory.")
        return str(local.resolve()), settings.served_model_name or local.resolve().name
    if local.exists() or settings.model.startswith((".", "/", "~")):
        _fail(f"--model {settings.model} is not a model directory.")
    return settings.model, settings.served_model_name or settings.model


def _prepare_vllm_environment(settings: Settings, local_model: bool) -> None:
    """Environment vLLM reads at start-up: KV space on CPU, no telemetry, offline for local models."""
    # With V1 multiprocessing off, vLLM on CPU runs the model worker inside the engine-core process
    # instead of a third process: start-up 58 s -> 43 s, and prefill 189 -> 375 tokens/s, decode
    # 10.5 -> 18.1 tokens/s on the 2-core machine (bench/model_speed.py). The API server still runs
    # the engine core in its own process (AsyncLLM always does).
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    if settings.kv_cache_gb is not None or "VLLM_CPU_KVCACHE_SPACE" not in os.environ:
        os.environ["VLLM_CPU_KVCACHE_SPACE"] = str(settings.kv_cache_gb or CPU_KV_CACHE_DEFAULT_GB)
    os.environ.setdefault("VLLM_NO_USAGE_STATS", "1")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if settings.enable_lora:  # `lcrag adapters load/unload` use vLLM's runtime LoRA routes
        os.environ.setdefault("VLLM_ALLOW_RUNTIME_LORA_UPDATING", "True")
    if local_model:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")


if __name__ == "__main__":
    app()
