"""The Faust application: settings in, a configured app with its agents and services out.

Read top to bottom, the data path is: ``topology.ingest`` (validate, dead-letter) → row
batches on the rows topic → ``sink.service.SinkService`` (ClickHouse).
"""

from __future__ import annotations

import logging
from typing import Any

import faust

from pipeline.settings import Settings
from pipeline.sink.service import SinkService

log = logging.getLogger(__name__)


def create_app(settings: Settings) -> faust.App:
    """Build the Faust app for ``settings`` with the whole topology registered."""
    from pipeline import topology

    app = faust.App(
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
    topology.register(app, settings)
    _register_health(app, sink)
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
