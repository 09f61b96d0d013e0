"""The Faust application: settings in, a configured app with its agents and services out.

Read top to bottom, the data path is: ``topology.ingest`` (validate, dead-letter) → row
batches on the rows topic → ``sink.service.SinkService`` (ClickHouse). The web port serves
``/healthz``, ``/readyz`` and ``/metrics`` (Prometheus; every metric is in pipeline.metrics).
"""

from __future__ import annotations

import fcntl
import gc
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import faust

from pipeline import metrics
from pipeline.errors import ConfigError
from pipeline.settings import Settings
from pipeline.sink.service import SinkService
from pipeline.worker.faust.aiokafka import App

if TYPE_CHECKING:
    from pipeline.worker.topology import Topology

log = logging.getLogger(__name__)


def create_app(settings: Settings) -> faust.App:
    """Build the Faust app for ``settings`` with the whole topology registered."""
    from pipeline.worker import topology

    app = App(
        settings.app_id,
        broker=settings.kafka_broker_urls,
        store="rocksdb://" if settings.store == "rocksdb" else "memory://",
        datadir=settings.data_dir,
        web_host=settings.worker_web_host,
        web_port=settings.worker_web_port,
        web_in_thread=False,
        topic_partitions=settings.topic_partitions,
        topic_replication_factor=settings.topic_replication,
        topic_allow_declare=True,
        table_standby_replicas=settings.standby_replicas,
        # Restores and standby replicas read changelogs a take at a time, not a record.
        TableManager="pipeline.worker.faust.recovery:TableManager",
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        # Batch changelog and output records instead of one request per record.
        producer_linger=0.02,
        producer_max_batch_size=1024 * 1024,
        broker_commit_interval=1.0,
        broker_session_timeout=settings.session_timeout_s,
        broker_heartbeat_interval=min(3.0, settings.session_timeout_s / 3),
        stream_buffer_maxsize=4096,
        # Our own start-up logging; Faust's banner is noise in service logs.
        loghandlers=[],
    )
    sink = SinkService(settings, loop=None)
    app.service(sink)  # type: ignore[arg-type]
    topo = topology.register(app, settings)
    _register_health(app, sink)
    _register_metrics(app, topo, sink, settings)
    if settings.stall_timeout_s > 0:
        _register_watchdog(app, topo, settings)
    if settings.memory_trim_s > 0:
        _register_memory_trim(app, settings.memory_trim_s)
    _register_loop_lag(app, settings)
    return app


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
    batch replaces many of them, so with the default thresholds full collections ran every
    second or so, each walking all of those objects: 3.9 s of a 15 s, 60,000-event backlog
    run went to them. With these thresholds that run had no full collection, and the worker
    used 28% less CPU per event. Objects that exist at start-up are frozen out of every
    collection. Cycles are still collected, just in fewer, larger young collections.
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


def _register_memory_trim(app: faust.App, every_s: float) -> None:
    """Hand memory that glibc's allocator keeps free back to the system, every ``every_s``.

    A backlog's batches, outputs and states come and go in hundreds of megabytes, and glibc
    keeps freed memory for reuse: after a 120,000-event backlog, 233 of a worker's 870 MiB
    resident were free heap. Trimmed every 5 s, a worker held 607-701 MiB 15 s after such a
    backlog, against 829-835 untrimmed (3 runs each), at the same CPU per event; the peak
    itself did not reliably drop. A trim took 10-25 ms there, in a thread, without the GIL
    (ctypes releases it).
    """
    import asyncio

    trim = malloc_trim()
    if trim is None:
        log.info("no malloc_trim in this C library: freed memory stays with the allocator")
        return

    @app.timer(every_s, name="siyu.memory-trim")  # type: ignore[untyped-decorator]
    async def _trim() -> None:
        await asyncio.get_running_loop().run_in_executor(None, trim)


def _register_watchdog(app: faust.App, topo: Topology, s: Settings) -> None:
    """Exit when owned partitions, or the table recovery, stop making progress (see
    pipeline/worker/watchdog.py). Watched from the first partition assignment."""
    import asyncio

    from pipeline.worker.faust.recovery import restore_positions
    from pipeline.worker.watchdog import STALL_EXIT_CODE, OffsetReader, Partition, StallWatchdog

    watchdog = StallWatchdog(s.stall_timeout_s)
    restore = StallWatchdog(s.stall_timeout_s, progress="next changelog offset to restore")
    read_offsets = OffsetReader(s.kafka_bootstrap, s.app_id)
    agent_topics = {s.topic_events, s.topic_by_user, s.topic_by_share, s.topic_by_sharer}

    def exit_stalled(what: str, stuck: list[str]) -> None:
        log.critical(
            "%s; exiting with %d for a restart: %s", what, STALL_EXIT_CODE, "; ".join(stuck)
        )
        logging.shutdown()
        os._exit(STALL_EXIT_CODE)

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
        recovery = app.tables.recovery  # type: ignore[attr-defined]  # not on TableManagerT
        if topo.publish_retries:
            watchdog.reset()
            restore.reset()
            return
        if recovery.in_recovery:
            watchdog.reset()
            restoring = restore_positions(recovery)
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

    _from_first_assignment(app, watch)


def _register_loop_lag(app: App, s: Settings) -> None:
    """From the worker's first partition assignment: measure the event loop's lag
    (``siyu_event_loop_lag_seconds``); warn at half the session timeout, before a busy loop
    costs the worker its partitions; and at that gap, stop it before it writes (its freeze
    fence). Not from the app's start, when stores open and topics are created, and not from
    the end of the first table recovery (as an ``app.task``): a freeze during that recovery,
    or in the watcher's first quarter second, would go unseen."""
    from pipeline.worker.watchdog import FreezeFence, watch_loop_lag

    fence = app.freeze_fence = FreezeFence(s.session_timeout_s / 2)

    async def watch() -> None:
        await watch_loop_lag(metrics.record_loop_lag, fence.limit_s, awake=fence.awake)

    _from_first_assignment(app, watch, first=fence.arm)


def _from_first_assignment(
    app: faust.App, task: Callable[[], Awaitable[None]], first: Callable[[], None] = lambda: None
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


def _register_health(app: faust.App, sink: SinkService) -> None:
    @app.page("/healthz")
    async def healthz(web: Any, request: Any) -> Any:
        return web.json({"status": "ok"})

    @app.page("/readyz")
    async def readyz(web: Any, request: Any) -> Any:
        ready = app.consumer is not None and not app.rebalancing and sink.started
        status = 200 if ready else 503
        return web.json(
            {"ready": ready, "rebalancing": bool(app.rebalancing), "sink": sink.started},
            status=status,
        )


#: Seconds between samples of the consumer lag and state sizes (a scrape reads the last).
GAUGE_SAMPLE_SECONDS = 5.0


def _register_metrics(app: faust.App, topo: Topology, sink: SinkService, s: Settings) -> None:
    agent_topics = {s.topic_events, s.topic_by_user, s.topic_by_share, s.topic_by_sharer}

    @app.page("/metrics")
    async def metrics_page(web: Any, request: Any) -> Any:
        # Content type as a header: aiohttp refuses a charset inside content_type=.
        return web.bytes(metrics.exposition(), headers={"Content-Type": metrics.CONTENT_TYPE})

    @app.timer(GAUGE_SAMPLE_SECONDS, name="siyu.sample-gauges")  # type: ignore[untyped-decorator]
    async def sample_gauges() -> None:
        try:
            lags = _agent_lags(app, agent_topics) + await sink.lags()
            metrics.set_consumer_lag(lags)
            metrics.set_state_keys(
                (name.value, n)
                for name, table in topo.tables.items()
                if (n := _table_size(table)) is not None
            )
        except Exception:  # a gauge must never take the worker down
            log.warning("sampling lag and state sizes failed", exc_info=True)


def _agent_lags(app: faust.App, topics: set[str]) -> list[tuple[str, int, int]]:
    """Lag of the agents' partitions: Faust's committed offsets against the highwater its
    consumer last saw (``_committed_offset`` is Faust's own record; faust-streaming < 0.16)."""
    consumer = app.consumer
    committed = getattr(consumer, "_committed_offset", {})
    try:
        assigned = [tp for tp in consumer.assignment() if tp.topic in topics]
        return [
            (tp.topic, tp.partition, lag)
            for tp, lag in metrics.lag_of(assigned, consumer.highwater, committed.get)
        ]
    except Exception:  # not started, or between generations of a rebalance
        return []


def _table_size(table: Any) -> int | None:
    """Keys of a Faust table in this worker's partitions: exact for the memory store, the
    RocksDB estimate otherwise (counting RocksDB keys means reading them all)."""
    store = table.data
    actives = getattr(store, "_dbs_for_actives", None)
    if actives is None:
        return len(store)
    try:
        return sum(int(db.property_int_value("rocksdb.estimate-num-keys") or 0) for db in actives())
    except Exception:
        return None
