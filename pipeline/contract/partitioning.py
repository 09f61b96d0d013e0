"""The one partitioning rule: which partition owns a brand's key.

Producers put a user's events on the events topic by it, and the worker puts each message
between agents, each state table entry and so each changelog record on the partition it
gives, so that a key's messages, state and changelog share one partition number. CRC-32 of
``brand_id``, a unit separator and the key: stable across processes and languages (Python's
``hash`` is salted per process).
"""

from __future__ import annotations

import zlib


def state_key(brand_id: str, key: str) -> bytes:
    """The bytes that identify ``(brand_id, key)``: a state table's key, and what the
    partition is computed from."""
    return f"{brand_id}\x1f{key}".encode()


def partition_of(key: bytes, partitions: int) -> int:
    """The partition that owns a :func:`state_key`."""
    return zlib.crc32(key) % partitions


def partition_for(brand_id: str, key: str, partitions: int) -> int:
    """The partition that owns ``(brand_id, key)``; for a user's events, ``key`` is the
    user id."""
    return partition_of(state_key(brand_id, key), partitions)
