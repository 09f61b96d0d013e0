"""A worker that stops making progress exits, so its supervisor restarts it; and a worker
watches its event loop, which Kafka heartbeats share (:func:`watch_loop_lag`).

Rarely (about one restart after a SIGKILL in ten, in the tests), a Faust worker recovers its
tables, reports ready with every partition assigned, and then consumes nothing. The cause is
inside Faust and not found; a restart always cures it. So each worker watches itself the way
an operator would: per partition of the agents' topics it owns, is there input waiting
(the end offset is past the group's committed offset) while the committed offset has not
moved for ``SIYU_STALL_TIMEOUT_S``? Then it logs why and exits with code 75 (EX_TEMPFAIL),
before acknowledging anything more; at-least-once delivery makes the restart safe.

Waiting for a reason is not a stall: while partitions are rebalanced or tables recovered,
or while the topology retries publishing (Kafka is away), the clock is reset. The ClickHouse
sink is not watched: when ClickHouse is down, pausing is its job.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

#: Exit code of a stalled worker (sysexits' EX_TEMPFAIL: try again).
STALL_EXIT_CODE = 75

Partition = tuple[str, int]

#: Seconds between two looks at the event loop's lag.
LOOP_LAG_EVERY_S = 0.25


async def watch_loop_lag(
    record: Callable[[float], None], warn_after_s: float, every_s: float = LOOP_LAG_EVERY_S
) -> None:
    """For ever: sleep ``every_s`` and ``record`` how much later than that the loop woke,
    which is how long something ran on it without a break.

    The worker's Kafka consumer, heartbeats included, runs on this loop
    (pipeline/transport.py): a loop busy for the session timeout loses the worker's
    partitions to the others. A lag of ``warn_after_s`` or more is logged as a warning, so
    the cause shows before that happens.
    """
    loop = asyncio.get_running_loop()
    while True:
        before = loop.time()
        await asyncio.sleep(every_s)
        lag = max(0.0, loop.time() - before - every_s)
        record(lag)
        if lag >= warn_after_s:
            log.warning(
                "the event loop ran %.1f s late: something held it that long, and Kafka "
                "heartbeats waited with it (a worker silent for SIYU_SESSION_TIMEOUT_S "
                "loses its partitions)",
                lag,
            )


@dataclass
class StallWatchdog:
    """Decides from successive observations whether some partition is stuck."""

    timeout_s: float
    clock: Callable[[], float] = time.monotonic
    #: Per partition: the committed offset last seen, and since when it has not moved.
    _seen: dict[Partition, tuple[int | None, float]] = field(default_factory=dict)

    def reset(self) -> None:
        """Forget everything: the clock starts again at the next observation."""
        self._seen.clear()

    def observe(
        self, committed: Mapping[Partition, int | None], ends: Mapping[Partition, int]
    ) -> list[str]:
        """Record one observation; return a description of each stuck partition (empty
        when all is well). ``committed`` holds the group's committed offset per owned
        partition (None: never committed), ``ends`` the end offsets of those partitions."""
        now = self.clock()
        stuck: list[str] = []
        seen: dict[Partition, tuple[int | None, float]] = {}
        for tp, offset in committed.items():
            end = ends.get(tp)
            base = offset if offset is not None and offset >= 0 else 0
            waiting = end is not None and end > base
            previous = self._seen.get(tp)
            since = previous[1] if previous is not None and previous[0] == offset else now
            if not waiting:
                since = now
            seen[tp] = (offset, since)
            if waiting and now - since >= self.timeout_s:
                stuck.append(
                    f"{tp[0]}[{tp[1]}]: committed offset {offset} unchanged for "
                    f"{now - since:.0f}s with input up to {end} waiting"
                )
        self._seen = seen
        return stuck


class OffsetReader:
    """A group's committed offsets and the end offsets of partitions, from the broker, over
    one admin connection kept between calls (the watermark confirmation asks twice a
    second). Blocking: call it from an executor, one reader per caller."""

    def __init__(self, bootstrap: str, group: str) -> None:
        self.bootstrap = bootstrap
        self.group = group
        self._admin: Any = None

    def close(self) -> None:
        if self._admin is not None:
            self._admin.close()
            self._admin = None

    def __call__(
        self, partitions: list[Partition]
    ) -> tuple[dict[Partition, int | None], dict[Partition, int]]:
        from kafka import KafkaAdminClient, TopicPartition
        from kafka.admin import OffsetSpec

        tps = [TopicPartition(t, p) for t, p in partitions]
        if self._admin is None:
            self._admin = KafkaAdminClient(
                bootstrap_servers=self.bootstrap, request_timeout_ms=10_000
            )
        try:
            listed: Any = self._admin.list_group_offsets({self.group: None}).get(self.group, {})
            ends: Any = self._admin.list_partition_offsets(dict.fromkeys(tps, OffsetSpec.LATEST))
        except Exception:
            self.close()  # connect again on the next call
            raise
        committed = {
            (tp.topic, tp.partition): (listed[tp].offset if tp in listed else None) for tp in tps
        }
        return committed, {(tp.topic, tp.partition): int(o.offset) for tp, o in ends.items()}
