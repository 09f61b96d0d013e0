"""The Faust application: settings in, a configured app with its agents and services out.

The data path is declared by :mod:`pipeline.worker.topology` (ingest agent → state agents →
row batches) and ends in :class:`~pipeline.sink.service.SinkService` (ClickHouse), which
runs in the same process. The web port serves ``/healthz``, ``/readyz`` and ``/metrics``
(Prometheus; every metric is in :mod:`pipeline.metrics`).
"""

from __future__ import annotations

import logging
from typing import Any

import faust

from pipeline import metrics
from pipeline.settings import Settings
from pipeline.sink.service import SinkService
from pipeline.worker.faust.aiokafka import App
from pipeline.worker.topology import Topology
from pipeline.worker.tuning import trim_memory_every
from pipeline.worker.watchdog import watch_loop, watch_progress

log = logging.getLogger(__name__)


def create_app(settings: Settings) -> faust.App:
    """Build the Faust app for ``settings`` with the whole topology registered."""
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
    topo = Topology(app, settings, metrics.SENSOR)
    topo.register()
    _register_health(app, sink)
    _register_metrics(app, topo, sink, settings)
    if settings.stall_timeout_s > 0:
        watch_progress(app, settings, lambda: topo.checkpoint.publish_retries > 0)
    if settings.memory_trim_s > 0:
        trim_memory_every(app, settings.memory_trim_s)
    watch_loop(app, settings, metrics.SENSOR.on_loop_lag)
    return app


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
    agent_topics = set(s.agent_topics())

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
                for name, table in topo.state_tables.items()
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
