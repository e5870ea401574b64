"""Quiet, structured logs: one line per event as `time level logger: message`.

vLLM applies a Python logging config file in each of its processes (`--logging-config`);
`vllm_logging_config_file` writes one so vLLM logs in the same format, at warning level, without the
notices listed in `EXPECTED_CPU_NOTICES` (each is the expected consequence of a choice lcrag makes on
CPU, so it tells the user nothing). With log level `debug` everything is shown.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
DATE_FORMAT = "%H:%M:%S"
OUR_LOGGERS = ("lcrag", "server", "rag", "compression", "finetune")

EXPECTED_CPU_NOTICES = (
    "Enforce eager set",  # lcrag passes --enforce-eager on CPU
    "Inductor compilation was disabled",  # follows from eager mode
    "Triton is not installed",  # no Triton build for CPU here; vLLM uses its V1 runner
    "Model Runner V2 requires Triton",
    "is not found in LD_PRELOAD",  # tcmalloc / iomp hints
    "doesn't allow to use `torch.set_num_threads`",
    "Since VLLM_ENABLE_V1_MULTIPROCESSING is set to False",  # lcrag's in-process worker
    "Found ulimit of",  # the machine's hard fd limit; far above what the server opens
    "Triton not available, find_triton_kernels",
    "Using custom scheduler class compression.vllm_integration",  # lcrag's KV-eviction scheduler
    "Attempted to load weight",  # one per weight when --dtype (bfloat16 on AMX) narrows a float32 checkpoint
)


class ExpectedNoticeFilter(logging.Filter):
    """Drops the log records listed in `EXPECTED_CPU_NOTICES`."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(notice in message for notice in EXPECTED_CPU_NOTICES)


def configure_logging(level: str) -> None:
    """Set lcrag's own loggers to `level`, and keep library warnings out of non-debug runs."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter(FORMAT, datefmt=DATE_FORMAT))
    for name in OUR_LOGGERS:
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(level.upper())
        logger.propagate = False
    os.environ.setdefault("TORCH_CPP_LOG_LEVEL", "INFO" if level == "debug" else "ERROR")
    if level != "debug":
        # Developer-facing warnings from imported libraries, and the resource tracker's complaint when the
        # engine process is stopped at shutdown; inherited by vLLM's processes through the environment.
        os.environ.setdefault(
            "PYTHONWARNINGS",
            "ignore::FutureWarning,ignore::DeprecationWarning,ignore:resource_tracker:UserWarning",
        )


def vllm_logging_config_file(debug: bool) -> Path:
    """Write the logging config vLLM's processes apply (vLLM level warning, expected notices dropped)."""
    filters = [] if debug else ["expected"]
    config = {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"expected": {"()": f"{__name__}.ExpectedNoticeFilter"}},
        "formatters": {"plain": {"format": FORMAT, "datefmt": DATE_FORMAT}},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "plain", "filters": filters}},
        "loggers": {
            "vllm": {"handlers": ["stderr"], "level": "DEBUG" if debug else "WARNING", "propagate": False},
            "torch": {"handlers": ["stderr"], "level": "DEBUG" if debug else "ERROR", "propagate": False},
        },
    }
    # One file per variant, replaced atomically: servers started side by side write identical content.
    path = Path(tempfile.gettempdir()) / f"lcrag-vllm-logging-{'debug' if debug else 'quiet'}.json"
    partial = path.with_suffix(f".{os.getpid()}.tmp")
    partial.write_text(json.dumps(config))
    partial.replace(path)
    return path
