"""The worker process: its claim on its data directory, and tuning of Python's cycle
collector and of glibc's allocator for a process that holds many states and replaces many
each batch. The measurements behind these choices are in docs/performance.md."""

from __future__ import annotations

import asyncio
import fcntl
import gc
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from pipeline.errors import ConfigError

log = logging.getLogger(__name__)

#: The file in a worker's data directory that its flock claims (see :func:`claim_data_dir`).
DATA_DIR_LOCK = "worker.lock"


def claim_data_dir(data_dir: str) -> IO[str]:
    """Claim ``data_dir`` for this worker process, or raise :class:`ConfigError`.

    RocksDB tables live there, one database per table partition, and RocksDB locks each
    database: a second worker on the same directory would join the group, take partitions
    in the rebalance, and then crash on the first database the other holds ("IO error:
    While lock file: ... Resource temporarily unavailable"), taking the group through
    rebalances again. So a RocksDB worker takes an exclusive lock on the directory before it
    connects to anything, and says plainly who holds it. The lock lasts as long as the
    returned file stays open (the process's life); the kernel drops it when the process
    ends, however it ends.
    """
    path = Path(data_dir)
    path.mkdir(parents=True, exist_ok=True)
    handle = open(path / DATA_DIR_LOCK, "a+")  # noqa: SIM115 - held for the process's life
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise ConfigError(
            f"the data directory {path} is in use by {holder}: each worker with "
            "SIYU_STORE=rocksdb needs its own SIYU_DATA_DIR"
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"siyu worker pid {os.getpid()}\n")
    handle.flush()
    return handle


#: Python's cycle collector thresholds for a worker: allocations before a young collection,
#: young collections per middle one, middle collections per full one (defaults 700/10/10).
GC_THRESHOLDS = (50_000, 50, 100)


def tune_gc() -> None:
    """Keep Python's cycle collector from eating the worker.

    A worker holds every state it owns as Python objects (the parsed-state cache), and each
    batch replaces many of them, so with the default thresholds full collections ran about
    every second, each walking all of those objects. Objects that exist at start-up are
    frozen out of every collection. Cycles are still collected, just in fewer, larger young
    collections.
    """
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def malloc_trim() -> Callable[[], object] | None:
    """glibc's ``malloc_trim(0)``, or None where the C library has none (musl, macOS)."""
    import ctypes

    trim = getattr(ctypes.CDLL(None), "malloc_trim", None)
    if trim is None:
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return lambda: trim(0)


def trim_memory_every(app: Any, every_s: float) -> None:
    """Hand memory that glibc's allocator keeps free back to the system, every ``every_s``.

    A backlog's batches, outputs and states come and go in hundreds of megabytes, and glibc
    keeps freed memory for reuse, so a worker's resident size stayed near its peak long
    after a backlog. A trim runs in a thread, without the GIL (ctypes releases it).
    """
    trim = malloc_trim()
    if trim is None:
        log.info("no malloc_trim in this C library: freed memory stays with the allocator")
        return

    @app.timer(every_s, name="siyu.memory-trim")  # type: ignore[untyped-decorator]
    async def _trim() -> None:
        await asyncio.get_running_loop().run_in_executor(None, trim)
