"""A vLLM general plugin: vLLM's engine process dies with the process that started it.

After `kill -9` of `lcrag serve`, vLLM's EngineCore process is orphaned and carries on (measured: still
decoding the killed server's request minutes later, 5 GB resident). In every process vLLM loads general
plugins in, except the one that started it all, this asks Linux to SIGKILL the process when its parent
exits (`prctl(PR_SET_PDEATHSIG)`); a parent already gone means exit now.

Extends: `vllm.plugins.load_general_plugins` (entry point group `vllm.general_plugins`, `pyproject.toml`),
which `vllm.v1.engine.core.EngineCore.__init__` and `vllm.v1.worker.worker_base` call in their processes.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import sys

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def die_with_parent() -> None:
    parent = multiprocessing.parent_process()
    if parent is None or not sys.platform.startswith("linux"):
        return  # the API server (or a script) itself: its lifetime is its own
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        return  # not permitted here: keep vLLM's own behaviour
    if os.getppid() != parent.pid:
        os._exit(1)  # the parent died before the request took effect
