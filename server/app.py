"""Run vLLM's OpenAI-compatible server in this process, with lcrag's routers and middleware added.

No vLLM code is copied or forked: `serve` follows vLLM's own `run_server_worker` sequence with its public
launcher functions (`setup_server`, `build_async_engine_client`, `build_app`, `init_app_state`,
`serve_http`) and calls `extend_app` on the built app before serving it. lcrag's routes replace vLLM's
chat, completion and model-list routes (`server.api`); middleware only does what concerns every route:
shutdown, origin checks, the API key, the body size limit.
"""

from __future__ import annotations

import json
import logging
from argparse import Namespace
from collections.abc import Sequence
from pathlib import Path

from fastapi import FastAPI

from compression.vllm_integration import SCHEDULER_CLS
from compression.vllm_integration import engine_flags as kv_engine_flags
from compression.vllm_integration.cpu.cache_layout import cpu_dtype
from compression.vllm_integration.outputs import EngineTimings
from compression.vllm_integration.version import check_kv_heads_split
from lcrag.logs import vllm_logging_config_file
from lcrag.settings import Settings
from server.api import collections, compare, generation, kv, kv_caches, models
from server.api_key import ApiKeyMiddleware
from server.body_limit import BodyLimitMiddleware
from server.engine import Engine
from server.errors import ApiError, error_response
from server.openapi import add_body_schemas
from server.origin import OriginCheckMiddleware
from server.pipeline.pipeline import Pipeline
from server.services import Services, open_store
from server.serving import adopt
from server.shutdown import SHUTDOWN_TIMEOUT_S, GracefulShutdown, Stopping, install_signal_handlers
from server.ui_access import UiLoginMiddleware

log = logging.getLogger("lcrag.server")


def vllm_args(settings: Settings, model: str, served_name: str, extra: Sequence[str] = ()) -> Namespace:
    """Parse the vLLM server arguments lcrag's settings stand for, plus `extra` raw vLLM flags."""
    from vllm.entrypoints.launchers.cli_args import make_arg_parser, validate_parsed_serve_args
    from vllm.logger import configure_logging_from_args
    from vllm.platforms import current_platform
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    log_config = vllm_logging_config_file(debug=settings.log_level == "debug")
    argv = [
        "--model", model,
        "--served-model-name", served_name,
        "--host", settings.host,
        "--port", str(settings.port),
        "--uvicorn-log-level", "warning",
        "--disable-uvicorn-access-log",
        "--logging-config", json.dumps({"pylogging_config_file": str(log_config)}),
    ]  # fmt: skip
    on_cpu = current_platform.is_cpu()
    argv += ["--dtype", cpu_dtype() if settings.dtype == "auto" and on_cpu else settings.dtype]
    if on_cpu:
        # float32 SSM state: what vLLM resets it to on CPUs with AVX-512 BF16 anyway, with a warning
        argv += ["--enforce-eager", "--mamba-ssm-cache-dtype", "float32"]
    elif settings.kv_cache_gb is not None:
        argv += ["--kv-cache-memory-bytes", str(settings.kv_cache_gb * 2**30)]
    if settings.max_model_len is not None:
        argv += ["--max-model-len", str(settings.max_model_len)]
    if settings.enable_lora:
        argv.append("--enable-lora")
    if settings.kv_eviction and on_cpu:
        argv += kv_engine_flags()
    parser = make_arg_parser(FlexibleArgumentParser(prog="lcrag serve"))
    args = parser.parse_args([*argv, *extra])
    validate_parsed_serve_args(args)
    configure_logging_from_args(args)  # as vLLM's own `main` does; the engine process gets it from args
    return args


def cpu_thread_binding(world_size: int, cpus: Sequence[int], numa_nodes: int) -> str | None:
    """`VLLM_CPU_OMP_THREADS_BIND` for `world_size` CPU workers (tensor x pipeline parallel) when vLLM's
    automatic binding cannot serve them — it wants one NUMA node per worker — as the usable CPUs split into
    equal runs ("0-7|8-15"); None when the automatic binding will do or there are too few CPUs."""
    if world_size <= 1 or numa_nodes >= world_size or len(cpus) < world_size:
        return None
    per_rank = len(cpus) // world_size
    ordered = sorted(cpus)
    runs = [ordered[rank * per_rank : (rank + 1) * per_rank] for rank in range(world_size)]
    return "|".join(",".join(str(cpu) for cpu in run) for run in runs)


def bind_cpu_threads(args: Namespace) -> None:
    """Set the per-worker CPU binding vLLM needs for tensor/pipeline parallelism on a one-NUMA-node machine
    (unless the user set one)."""
    import os

    from vllm.platforms import current_platform

    if not current_platform.is_cpu():
        return
    world_size = args.tensor_parallel_size * args.pipeline_parallel_size
    numa_nodes = len(list(Path("/sys/devices/system/node").glob("node[0-9]*"))) or 1
    binding = cpu_thread_binding(world_size, sorted(os.sched_getaffinity(0)), numa_nodes)
    if binding is not None and "VLLM_CPU_OMP_THREADS_BIND" not in os.environ:
        os.environ["VLLM_CPU_OMP_THREADS_BIND"] = binding
        log.info("%d CPU workers, one NUMA node: worker threads bound to CPUs %s", world_size, binding)


def check_eviction_parallelism(args: Namespace) -> None:
    """Refuse a tensor-parallel size the local model's KV heads do not split over, before the engine and its
    workers start (the worker checks again with vLLM's own head count); `UnsupportedEngineError` says so."""
    config_file = Path(args.model) / "config.json"
    if args.scheduler_cls != SCHEDULER_CLS or args.tensor_parallel_size <= 1 or not config_file.is_file():
        return
    config = json.loads(config_file.read_text())
    config = config.get("text_config", config)
    kv_heads = config.get("num_key_value_heads") or config.get("num_attention_heads")
    if isinstance(kv_heads, int):
        check_kv_heads_split(kv_heads, args.tensor_parallel_size)


def extend_app(
    app: FastAPI,
    settings: Settings,
    services: Services | None = None,
    stopping: Stopping | None = None,
    allowed_origins: Sequence[str] = (),
    pipeline: Pipeline | None = None,
) -> FastAPI:
    """Add lcrag's routers, error handler and middleware to vLLM's built app (the last added runs first);
    with `stopping`, requests in flight end cleanly when the server stops (`server.shutdown`). Foreign
    pages may change state only from `allowed_origins` (vLLM's `--allowed-origins`, `server.origin`)."""
    app.add_exception_handler(ApiError, lambda _request, error: error_response(error))
    if getattr(app.state, "openai_serving_chat", None) is not None:
        adopt(app.state.openai_serving_chat)
    app.state.lcrag_pipeline = pipeline or Pipeline(services)
    generation.replace_vllm_generation_routes(app)
    add_body_schemas(app, generation.BODIES)
    app.include_router(kv.router)
    if services is not None:
        app.state.lcrag = services
        app.include_router(collections.router)
        app.include_router(compare.router)
        app.include_router(kv_caches.router)
        models.replace_vllm_models_route(app)
        if settings.ui:
            from ui.mount import mount_ui  # Gradio loads only when the UI is served

            api_key = settings.api_key.get_secret_value() if settings.api_key else None
            mount_ui(app, loopback_url(settings), api_key, settings.max_upload_mb)
    # vLLM's SageMaker bootstrap builds the middleware stack eagerly; Starlette rebuilds it on the first
    # request when it is unset, so clearing it lets ours join vLLM's instead of being refused.
    app.middleware_stack = None
    app.add_middleware(BodyLimitMiddleware, limit_bytes=settings.max_request_mb * 1_000_000)
    if settings.api_key is not None:
        app.add_middleware(ApiKeyMiddleware, api_key=settings.api_key.get_secret_value())
        app.add_middleware(UiLoginMiddleware, api_key=settings.api_key.get_secret_value())
    app.add_middleware(OriginCheckMiddleware, allowed_origins=allowed_origins)
    if stopping is not None:
        app.add_middleware(GracefulShutdown, stopping=stopping)
    return app


def loopback_url(settings: Settings) -> str:
    """This server's own URL as seen from inside the machine (a wildcard listen address is not one)."""
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(settings.host, settings.host)
    return settings.model_copy(update={"host": host}).base_url


async def serve(settings: Settings, args: Namespace) -> None:
    """Start the engine, build vLLM's app, extend it and serve until SIGINT/SIGTERM."""
    import vllm.envs as envs
    from vllm.entrypoints.launchers.api_server.app_state import init_app_state
    from vllm.entrypoints.launchers.api_server.entry import build_async_engine_client
    from vllm.entrypoints.launchers.app import build_app
    from vllm.entrypoints.launchers.launcher import serve_http, setup_server

    store = open_store(settings)  # a store in use or unreadable fails here, before the engine starts
    listen_address, sock = setup_server(args, reuse_port=False)
    async with build_async_engine_client(args) as engine_client:
        supported_tasks = await engine_client.get_supported_tasks()
        model_config = engine_client.model_config
        app = build_app(args, supported_tasks, model_config)
        await init_app_state(engine_client, app.state, args, supported_tasks)
        services = Services.build(
            settings, store, args.model, args.served_model_name[0], model_config.max_model_len
        )
        services.engine_timings = EngineTimings()
        services.engine_timings.watch(engine_client)
        engine = Engine(engine_client, app.state.openai_serving_models)
        if args.scheduler_cls == SCHEDULER_CLS:
            from compression.vllm_integration.stats import KVStatsLedger
            from server.kv_cache import ContextCaches

            services.kv_stats = KVStatsLedger()
            services.kv_stats.watch(engine_client)
            services.context_caches = ContextCaches(engine, services.tokenizer, model_config.max_model_len)
        pipeline = Pipeline(services, engine, services.context_caches)
        stopping = Stopping()
        extend_app(app, settings, services, stopping, args.allowed_origins, pipeline)
        signals = install_signal_handlers(stopping, app.state)
        log.info(
            "lcrag is serving %s (%s) at %s (OpenAI API under /v1)",
            args.served_model_name[0],
            str(model_config.dtype).removeprefix("torch."),
            listen_address,
        )
        shutdown_task = await serve_http(
            app,
            sock=sock,
            host=args.host,
            port=args.port,
            log_level=args.uvicorn_log_level,
            access_log=not args.disable_uvicorn_access_log,
            timeout_keep_alive=envs.VLLM_HTTP_TIMEOUT_KEEP_ALIVE,
            timeout_graceful_shutdown=SHUTDOWN_TIMEOUT_S,  # a backstop: GracefulShutdown ends requests first
        )
        signals.cancel()
    try:
        await shutdown_task
    finally:
        sock.close()
