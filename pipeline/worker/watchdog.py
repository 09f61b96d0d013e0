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
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, NoReturn

from pipeline.kafka.offsets import OffsetReader, Partition, committed_or_zero
from pipeline.settings import Settings

log = logging.getLogger(__name__)


class ExitCode(IntEnum):
    """Every deliberate exit of a worker, each a restart its supervisor should make."""

    #: A batch failed outside the per-message error handling: a bug, and the batch is left
    #: half done, unacknowledged (sysexits' EX_SOFTWARE).
    BUG = 70
    #: No progress on owned partitions or on a table recovery, or input the consumer never
    #: delivered (sysexits' EX_TEMPFAIL: try again).
    STALLED = 75
    #: Frozen past the fence's limit (:class:`FreezeFence`).
    FROZEN = 76


def exit_now(code: ExitCode, message: str, *args: object, exc_info: bool = False) -> NoReturn:
    """Log ``message % args`` as critical and end the process at once with ``code``.

    ``os._exit``: no cleanup, no acknowledging, no flush of anything in flight. What was
    not committed is read again by the restarted worker (at-least-once, idempotent writes),
    so ending abruptly loses nothing, while a graceful stop would acknowledge the batch.
    """
    log.critical(message, *args, exc_info=exc_info)
    logging.shutdown()
    os._exit(code)


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
    exit_now(
        ExitCode.FROZEN,
        "this worker was frozen for %.1f s (the limit is %.1f s, half SIYU_SESSION_TIMEOUT_S): "
        "its partitions may have moved to another worker, which must not be overwritten by "
        "what this one had in flight; exiting with %d for a restart",
        frozen_s,
        limit_s,
        int(ExitCode.FROZEN),
    )


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


class HoleCheck:
    """Input an agent is given must follow the last input it processed, or be explained.

    Each agent records, per input partition, the last offset it processed (in its tables,
    written with its output). Input between that offset, ``done``, and ``first``, the first
    one given now, must not be skipped silently (:func:`skipped_input`). A hole the
    consumer left stops the worker before this batch is acknowledged, so that a restart
    reads it from the committed offset; one left by retention or by a moved committed
    offset is logged, and the worker goes on.
    """

    def __init__(self, bootstrap: str, group: str) -> None:
        self._read = OffsetReader(bootstrap, group)

    async def check(self, topic: str, partition: int, done: int, first: int) -> None:
        if not is_hole(done, first):
            return
        tp = (topic, partition)
        reader = self._read
        committed: int | None = None
        start = 0
        verdict: str | None
        try:
            committed, start = await asyncio.get_running_loop().run_in_executor(
                None, lambda: (reader([tp])[0][tp], reader.starts([tp])[tp])
            )
        except Exception as err:  # no answer: a restart is the side that loses nothing
            log.warning("could not read the offsets of %s[%d]: %s", topic, partition, err)
            verdict = "undelivered"
        else:
            verdict = skipped_input(done, first, committed, start)
        missing = f"{topic}[{partition}] offsets {max(done + 1, start)}..{first - 1}"
        if verdict == "deleted":
            log.error("%s were deleted (retention) before they were processed: lost", missing)
        elif verdict == "moved":
            log.warning(
                "%s skipped: the group's committed offset was moved past them, to %s",
                missing,
                committed,
            )
        else:
            exit_now(
                ExitCode.STALLED,
                "the Kafka consumer did not deliver %s (the last processed was %d, the next "
                "given is %d); exiting with %d so that a restart reads them from the "
                "committed offset (%s)",
                missing,
                done,
                first,
                int(ExitCode.STALLED),
                "unknown" if committed is None else committed,
            )


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
    calls ``on_frozen`` (by default: log why, exit with :attr:`ExitCode.FROZEN`), so
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
            base = committed_or_zero(offset)
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


def watch_progress(app: Any, s: Settings, waiting_for_kafka: Callable[[], bool]) -> None:
    """Exit when owned partitions, or the table recovery, stop making progress (see the
    module); not while ``waiting_for_kafka()`` (publishing is being retried). Watched from
    the first partition assignment."""
    # Looked up at each call, not imported at the top: tests replace it.
    from pipeline.worker.faust import recovery as faust_recovery

    watchdog = StallWatchdog(s.stall_timeout_s)
    restore = StallWatchdog(s.stall_timeout_s, progress="next changelog offset to restore")
    read_offsets = OffsetReader(s.kafka_bootstrap, s.app_id)
    agent_topics = set(s.agent_topics())

    def exit_stalled(what: str, stuck: list[str]) -> None:
        exit_now(
            ExitCode.STALLED,
            "%s; exiting with %d for a restart: %s",
            what,
            int(ExitCode.STALLED),
            "; ".join(stuck),
        )

    async def ask(
        partitions: list[Partition], watch: StallWatchdog
    ) -> tuple[dict[Partition, int | None], dict[Partition, int]] | None:
        """The group's committed offsets and the end offsets of ``partitions``, or None
        (``watch`` reset) when Kafka does not answer: that is not proof of a stall."""
        try:
            return await asyncio.get_running_loop().run_in_executor(None, read_offsets, partitions)
        except Exception as err:
            log.warning("stall watchdog could not read offsets: %s", err)
            watch.reset()
            return None

    async def look() -> None:
        recovery = app.tables.recovery
        if waiting_for_kafka():
            watchdog.reset()
            restore.reset()
            return
        if recovery.in_recovery:
            watchdog.reset()
            restoring = faust_recovery.restore_positions(recovery)
            offsets = await ask(list(restoring), restore)
            if offsets is not None:
                stuck = restore.observe(restoring, offsets[1])
                if stuck:
                    exit_stalled("table recovery made no progress", stuck)
            return
        restore.reset()
        if app.rebalancing:
            watchdog.reset()
            return
        owned = [(tp.topic, tp.partition) for tp in app.consumer.assignment()]
        offsets = await ask([tp for tp in owned if tp[0] in agent_topics], watchdog)
        if offsets is None:
            return
        stuck = watchdog.observe(*offsets)
        if stuck:
            exit_stalled("no progress on owned partitions", stuck)

    async def watch() -> None:
        while True:
            await asyncio.sleep(min(15.0, s.stall_timeout_s / 4))
            try:
                await look()
            except Exception:  # a fault in the watch must not crash the worker it watches
                log.exception("the stall watchdog failed to look; it looks again")

    from_first_assignment(app, watch)


def watch_loop(app: Any, s: Settings, record_lag: Callable[[float], None]) -> None:
    """From the worker's first partition assignment: measure the event loop's lag
    (``siyu_event_loop_lag_seconds``); warn at half the session timeout, before a busy loop
    costs the worker its partitions; and at that gap, stop it before it writes (its freeze
    fence). Not from the app's start, when stores open and topics are created, and not from
    the end of the first table recovery (as an ``app.task``): a freeze during that recovery,
    or in the watcher's first quarter second, would go unseen."""
    fence = app.freeze_fence = FreezeFence(s.session_timeout_s / 2)

    async def watch() -> None:
        await watch_loop_lag(record_lag, fence.limit_s, awake=fence.awake)

    from_first_assignment(app, watch, first=fence.arm)


def from_first_assignment(
    app: Any, task: Callable[[], Awaitable[None]], first: Callable[[], None] = lambda: None
) -> None:
    """At ``app``'s first partition assignment, call ``first`` and start ``task`` as a
    future of the app (stopped with it). Faust's ``app.task`` and ``app.timer`` start only
    once the first table recovery has ended, which leaves that recovery unwatched."""
    started = False

    async def on_assigned(*args: Any, **kwargs: Any) -> None:
        nonlocal started
        if not started:
            started = True
            first()
            app.add_future(task())

    app.on_partitions_assigned.connect(on_assigned)
