"""The worker process: its claim on its data directory, and the allocator trim."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.errors import ConfigError
from pipeline.worker.tuning import claim_data_dir

_TRIM_PROBE = """
import sys
from pipeline.worker.tuning import malloc_trim

def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024

trim = malloc_trim()
assert trim is not None, "no malloc_trim in glibc"
# 64 MiB in 32 KiB blocks (below glibc's mmap threshold: from the heap), written so they are
# resident, each followed by a small block that stays: free() alone can return none of them.
blocks, pins = [], []
for i in range(2048):
    blocks.append(b"x" * (32 * 1024 - i % 7))
    pins.append(b"y" * (600 + i % 5))
del blocks
before = rss()
trim()
print(before - rss())
"""


def test_malloc_trim_hands_the_allocators_free_memory_back() -> None:
    """The worker's periodic trim (SIYU_MEMORY_TRIM_S) finds glibc's malloc_trim and calls
    it right: freed heap memory that the allocator kept leaves the resident set."""
    probe = subprocess.run(
        [sys.executable, "-c", _TRIM_PROBE], capture_output=True, text=True, check=False
    )
    assert probe.returncode == 0, probe.stderr
    assert int(probe.stdout) > 32 * 2**20


def test_a_rocksdb_data_directory_belongs_to_one_worker(tmp_path: Path) -> None:
    first = claim_data_dir(str(tmp_path / "data"))
    with pytest.raises(ConfigError) as refused:
        claim_data_dir(str(tmp_path / "data"))
    message = str(refused.value)
    assert f"siyu worker pid {os.getpid()}" in message
    assert "SIYU_DATA_DIR" in message
    first.close()  # the holder is gone: the directory is free again
    claim_data_dir(str(tmp_path / "data")).close()


def test_a_second_rocksdb_worker_on_a_directory_stops_before_it_joins_the_group(
    tmp_path: Path,
) -> None:
    held = claim_data_dir(str(tmp_path))
    try:
        # No broker listens on port 9: the worker must stop on the directory, not on Kafka.
        env = {
            **os.environ,
            "SIYU_STORE": "rocksdb",
            "SIYU_DATA_DIR": str(tmp_path),
            "SIYU_KAFKA_BOOTSTRAP": "127.0.0.1:9",
        }
        done = subprocess.run(
            [sys.executable, "-m", "pipeline.cli", "worker"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    finally:
        held.close()
    assert done.returncode == 2, done.stderr
    assert f"data directory {tmp_path} is in use by siyu worker pid {os.getpid()}" in done.stderr
    assert "Traceback" not in done.stderr
