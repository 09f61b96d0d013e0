"""A worker that stops making progress exits, so its supervisor restarts it; a worker
watches its event loop, which Kafka heartbeats share (:func:`watch_loop_lag`); and a worker
that was frozen long enough to lose its partitions exits before it writes again
(:class:`FreezeFence`).

Rarely (about one restart after a SIGKILL in ten, in the tests), a Faust worker recovers its
tables, reports ready with every partition assigned, and then consumes nothing. The cause is
inside Faust and not found; a restart always cures it. So each worker watches itself the way
an operator would: per partition of the agents' topics it owns, is there input waiting
(the end offset is past the group's committed offset) while the committed offset has not
moved for ``SIYU_STALL_TIMEOUT_S``? Then it logs why and exits with code 75 (EX_TEMPFAIL),
before acknowledging anything more; at-least-once delivery makes the restart safe.

Waiting for a reason is not a stall: while partitions are rebalanced, or while the topology
retries publishing (Kafka is away), the clock is reset. A table recovery is watched the same
way on its own terms: per changelog partition it restores, is there changelog left to read
while the next offset to restore has not moved for ``SIYU_STALL_TIMEOUT_S``? Faust's
recovery can wait for ever (``No event received for active tp``: after a takeover, seen
here once for 5 minutes until a rebalance cured it), and until it ends nothing else is
processed. Both watches run from the worker's first partition assignment, so the first
recovery after a start is watched too. The ClickHouse sink is not watched: when ClickHouse
is down, pausing is its job.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

#: Exit code of a stalled worker, or of one whose consumer skipped input (sysexits'
#: EX_TEMPFAIL: try again).
STALL_EXIT_CODE = 75
#: Exit code of a worker that was frozen past its fence's limit (:class:`FreezeFence`).
FROZEN_EXIT_CODE = 76

Partition = tuple[str, int]

#: Seconds between two looks at the event loop's lag.
LOOP_LAG_EVERY_S = 0.25


async def watch_loop_lag(
    record: Callable[[float], None],
    warn_after_s: float,
    every_s: float = LOOP_LAG_EVERY_S,
    awake: Callable[[], None] = lambda: None,
) -> None:
    """For ever: sleep ``every_s`` and ``record`` how much later than that the loop woke,
    which is how long something ran on it without a break.

    The worker's Kafka consumer, heartbeats included, runs on this loop
    (pipeline/worker/faust/aiokafka.py): a loop busy for the session timeout loses the worker's
    partitions to the others. A lag of ``warn_after_s`` or more is logged as a warning, so
    the cause shows before that happens. ``awake`` is called at every wake, after the lag
    was recorded (:meth:`FreezeFence.awake`).
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
        awake()


def _exit_frozen(frozen_s: float, limit_s: float) -> None:
    log.critical(
        "this worker was frozen for %.1f s (the limit is %.1f s, half SIYU_SESSION_TIMEOUT_S): "
        "its partitions may have moved to another worker, which must not be overwritten by "
        "what this one had in flight; exiting with %d for a restart",
        frozen_s,
        limit_s,
        FROZEN_EXIT_CODE,
    )
    logging.shutdown()
    os._exit(FROZEN_EXIT_CODE)


def is_hole(done: int, first: int) -> bool:
    """Whether offsets are missing between ``done``, the last one an agent processed
    (negative: none yet), and ``first``, the first one it is given now."""
    return done >= 0 and first > done + 1


def skipped_input(done: int, first: int, committed: int | None, start: int) -> str | None:
    """Why the offsets between ``done`` (the last one an agent processed, from its table) and
    ``first`` (the first one it is given now) of a partition are missing, or None if none
    are. The agents' topics have no compaction and no transactions, so their offsets have
    no holes of their own.

    - ``"deleted"``: they are all below ``start``, the partition's first offset: deleted by
      retention before anyone processed them. Lost; there is nothing to read again.
    - ``"moved"``: the group's ``committed`` offset (the next to read) is past the first of
      them that exists: someone moved it (an operator's reset). Skipped on purpose.
    - ``"undelivered"``: the consumer did not deliver them. faust-streaming can do that
      after a rebalance: it then counts the committed offset itself as read, and commits
      past it once a later message is acknowledged. Until the batch that found the hole
      is acknowledged, the committed offset still points at it, so a restart reads it.
    """
    if not is_hole(done, first):
        return None
    missing_from = max(done + 1, start)
    if missing_from >= first:
        return "deleted"
    if committed is not None and committed > missing_from:
        return "moved"
    return "undelivered"


class FreezeFence:
    """Stop a worker that was frozen for ``limit_s`` before it sends Kafka anything more.

    A worker frozen for the session timeout (its process stopped: a VM or container paused,
    CPU throttled; or its event loop held, which holds the heartbeats too) loses its
    partitions: another worker re-reads them from the last commit and writes their states
    and rows. Thawed, the frozen worker would finish what it had in flight and send it
    after the new owner's writes. A changelog keeps the last record of a key, so its stale
    state would be what the next restore reads, and its rows would follow the new owner's:
    lost events, wrong credits. Kafka's transactions fence such a zombie at the broker;
    siyu's at-least-once writes do not have them, so the zombie fences itself.

    :meth:`awake` is called by the loop-lag watcher every quarter second; :meth:`check` by
    the worker's producer just before each produce request goes to the socket (nothing in
    between yields to the loop). A gap of ``limit_s`` since the last wake, seen by either,
    calls ``on_frozen`` (by default: log why, exit with :data:`FROZEN_EXIT_CODE`), so
    nothing the worker had computed before the freeze reaches Kafka after it; a restarted
    worker re-reads from the committed offsets, like after a crash. The limit is half the
    session timeout: heartbeats go every third of it, so a member is not yet expired then.

    Armed, and its watcher started, at the first partition assignment: a worker that never
    owned a partition has nothing to fence, and start-up (opening stores, creating topics)
    may hold the loop. From then on every moment is watched, the table recovery that
    follows the assignment included.
    What it cannot fence is a freeze between the check and the bytes leaving (microseconds,
    or a produce request larger than the socket's buffer).
    """

    def __init__(
        self,
        limit_s: float,
        on_frozen: Callable[[float, float], None] = _exit_frozen,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit_s = limit_s
        self.on_frozen = on_frozen
        self.clock = clock
        self.armed = False
        self._last_awake: float | None = None

    def arm(self) -> None:
        """From now on, a freeze stops the worker: the watch starts at this moment, so a
        freeze before the watcher's next wake is measured too. Its watcher must run from
        now on (an armed fence that no watcher wakes stops the next produce request after
        ``limit_s``)."""
        if not self.armed:
            self.armed = True
            self._last_awake = self.clock()

    def awake(self) -> None:
        """The loop-lag watcher woke: a long gap since its last wake was a freeze."""
        now = self.clock()
        self._judge(now)
        self._last_awake = now

    def check(self) -> None:
        """Called before a produce request is written: stop if the worker was frozen."""
        self._judge(self.clock())

    def _judge(self, now: float) -> None:
        if self.armed and self._last_awake is not None:
            gap = now - self._last_awake
            if gap >= self.limit_s:
                self.on_frozen(gap, self.limit_s)


@dataclass
class StallWatchdog:
    """Decides from successive observations whether some partition is stuck."""

    timeout_s: float
    clock: Callable[[], float] = time.monotonic
    #: What the offsets observed are, for the descriptions of stuck partitions.
    progress: str = "committed offset"
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
                    f"{tp[0]}[{tp[1]}]: {self.progress} {offset} unchanged for "
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
        from kafka import TopicPartition
        from kafka.admin import OffsetSpec

        tps = [TopicPartition(t, p) for t, p in partitions]
        listed: Any = self._ask(lambda admin: admin.list_group_offsets({self.group: None}))
        listed = listed.get(self.group, {})
        ends: Any = self._ask(
            lambda admin: admin.list_partition_offsets(dict.fromkeys(tps, OffsetSpec.LATEST))
        )
        committed = {
            (tp.topic, tp.partition): (listed[tp].offset if tp in listed else None) for tp in tps
        }
        return committed, {(tp.topic, tp.partition): int(o.offset) for tp, o in ends.items()}

    def starts(self, partitions: list[Partition]) -> dict[Partition, int]:
        """The first offset each partition still holds (older records were deleted)."""
        from kafka import TopicPartition
        from kafka.admin import OffsetSpec

        tps = [TopicPartition(t, p) for t, p in partitions]
        firsts: Any = self._ask(
            lambda admin: admin.list_partition_offsets(dict.fromkeys(tps, OffsetSpec.EARLIEST))
        )
        return {(tp.topic, tp.partition): int(o.offset) for tp, o in firsts.items()}

    def _ask(self, question: Callable[[Any], Any]) -> Any:
        from kafka import KafkaAdminClient

        if self._admin is None:
            self._admin = KafkaAdminClient(
                bootstrap_servers=self.bootstrap, request_timeout_ms=10_000
            )
        try:
            return question(self._admin)
        except Exception:
            self.close()  # connect again on the next call
            raise
