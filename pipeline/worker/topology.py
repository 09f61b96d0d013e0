"""The worker's topology: the topics, tables and agents declared on a Faust app.

Read top to bottom, the data path is::

    siyu.events ──ingest──▶ siyu.rows (events table)      bad input ──▶ siyu.dead-letters
                    │
                    └─▶ siyu.by-user / siyu.by-share ──state agents──▶ siyu.by-* (relays)
                                                            └──────────▶ siyu.rows

- :class:`~pipeline.worker.ingest.IngestAgent` validates and routes events;
- one :class:`~pipeline.worker.state.StateAgent` per processor of the domain core;
- every batch is made durable by the :class:`~pipeline.worker.checkpoint.Checkpoint`;
- messages between agents are relays (:mod:`pipeline.worker.relay`), carrying the
  watermark that :class:`~pipeline.worker.watermarks.WatermarkAnnouncer` confirms.
"""

from __future__ import annotations

from typing import Any

import faust

from pipeline.domain import DomainConfig, ProcessorName, build_processors
from pipeline.kafka.topics import INGEST_OFFSETS_TABLE, state_table
from pipeline.settings import Settings
from pipeline.worker.checkpoint import Checkpoint
from pipeline.worker.ingest import IngestAgent
from pipeline.worker.relay import Router
from pipeline.worker.sensor import Sensor
from pipeline.worker.state import StateAgent
from pipeline.worker.watchdog import HoleCheck
from pipeline.worker.watermarks import WatermarkAnnouncer

#: Seconds between polls of the by-* topics' committed and end offsets (watermarks.py).
CONFIRM_EVERY_S = 0.5


def domain_config(s: Settings) -> DomainConfig:
    """The domain rules' parameters from the settings."""
    return DomainConfig(
        attribution_window_s=s.attribution_window_s,
        allowed_lateness_s=s.allowed_lateness_s,
        koc_min_buyers=s.koc_min_buyers,
        koc_window_s=s.koc_window_s,
    )


def store_options(s: Settings) -> dict[str, Any] | None:
    """A table's store options: RocksDB's memory per partition database, bounded.

    Faust opens one RocksDB database per table partition, each with 64 MiB memtables (up to
    three) and a 2 GiB block cache of its own, so a worker with many partitions could grow
    to gigabytes that no setting of siyu's accounted for. A fresh dict per table: Faust's
    store takes options out of the dict it is given.
    """
    if s.store != "rocksdb":
        return None
    return {
        "write_buffer_size": s.rocksdb_write_buffer_mb << 20,
        "block_cache_size": s.rocksdb_block_cache_mb << 20,
    }


class Topology:
    """Declares the pipeline's topics, tables and agents on a Faust app."""

    def __init__(self, app: faust.App, s: Settings, sensor: Sensor) -> None:
        self.app = app
        self.s = s

        def topic(name: str) -> Any:
            return app.topic(name, key_serializer="raw", value_serializer="raw")

        def table(name: str) -> Any:
            return app.Table(
                name,
                default=None,
                partitions=s.topic_partitions,
                key_type=bytes,  # bytes type -> "raw" codec: no Faust codec on the hot path
                value_type=bytes,
                options=store_options(s),
            )

        self.events_topic = topic(s.topic_events)
        by_topic = {
            ProcessorName.USER: topic(s.topic_by_user),
            ProcessorName.SHARE: topic(s.topic_by_share),
            ProcessorName.SHARER: topic(s.topic_by_sharer),
        }
        processors = build_processors(domain_config(s))
        self.state_tables = {name: table(state_table(name)) for name in processors}
        # Per partition of the events topic, the last offset whose output was confirmed.
        ingest_offsets = table(INGEST_OFFSETS_TABLE)

        self.checkpoint = Checkpoint(app, s, topic(s.topic_rows), topic(s.topic_dead_letters))
        router = Router({n: t.get_topic_name() for n, t in by_topic.items()}, s.topic_partitions)
        self.announcer = WatermarkAnnouncer(s, router, lambda: app.producer)
        holes = HoleCheck(s.kafka_bootstrap, s.app_id)  # one offset reader for all agents
        self.ingest = IngestAgent(
            s, ingest_offsets, self.checkpoint, router, self.announcer, holes, sensor
        )
        self.states = {
            name: StateAgent(
                s,
                processor,
                router.topics[name],
                self.state_tables[name],
                self.checkpoint,
                router,
                holes,
                sensor,
            )
            for name, processor in processors.items()
        }
        self.by_topic = by_topic

    def register(self) -> None:
        """Declare the agents and the watermark timer on the app."""
        app = self.app
        app.on_partitions_revoked.connect(self._forget_states)
        app.on_partitions_assigned.connect(self._forget_states)
        app.timer(CONFIRM_EVERY_S, name="siyu.confirm-watermark")(self.announcer.confirm)
        app.agent(self.events_topic, name="siyu.ingest")(self.ingest.run)
        for name, agent in self.states.items():
            app.agent(self.by_topic[name], name=f"siyu.state-{name.value}")(agent.run)

    def _forget_states(self, *args: Any, **kwargs: Any) -> None:
        # Partitions moved: Faust may restore the tables from their changelogs.
        for agent in self.states.values():
            agent.cache.clear()
