"""One process per embedded Chroma store: a lock file in the store's folder, held while a `Store` is open.

Two processes writing one embedded store (say `lcrag serve` and `lcrag ingest`) lose writes or corrupt it,
so the second fails at once, naming the process that holds it and what to do instead. The lock is an
`flock` on `<store>/lcrag.lock`: the kernel releases it when its holder exits, even after kill -9. Within a
process the lock is counted, so several `Store` objects on one folder share it; the last one closed (or
garbage-collected) releases it. A `chroma run` server needs no lock.
"""

from __future__ import annotations

import fcntl
import os
import sys
import threading
from pathlib import Path
from typing import IO

from rag.errors import StoreInUseError

LOCK_NAME = "lcrag.lock"
_held: dict[Path, tuple[IO[str], int]] = {}  # this process's locks by store folder, with their users
_guard = threading.Lock()


def hold_store_lock(folder: Path) -> Path:
    """Take the store's lock for this process (once more, if it holds it); returns the key to release.
    Raises StoreInUseError naming the holder when another process has it."""
    folder = folder.resolve()
    with _guard:
        if folder in _held:
            handle, users = _held[folder]
            _held[folder] = (handle, users + 1)
            return folder
        folder.mkdir(parents=True, exist_ok=True)
        handle = (folder / LOCK_NAME).open("a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise StoreInUseError(
                f"The collection store {folder} is in use by {holder}. Stop that process first, add "
                "documents through its API (POST /v1/collections/NAME/documents), or run both against one "
                "`chroma run` server (--chroma-url)."
            ) from None
        handle.seek(0)
        handle.truncate()
        command = " ".join([Path(sys.argv[0]).name, *sys.argv[1:2]])
        handle.write(f"pid {os.getpid()} ({command})\n")
        handle.flush()
        _held[folder] = (handle, 1)
        return folder


def release_store_lock(folder: Path) -> None:
    """One user of the folder's lock is done; the last one unlocks it."""
    with _guard:
        if folder not in _held:
            return
        handle, users = _held[folder]
        if users > 1:
            _held[folder] = (handle, users - 1)
            return
        del _held[folder]
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()
