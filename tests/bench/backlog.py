"""The benchmark's traffic: generated events, sent the way a brand's backend sends them.

Events come from :func:`tests.scenario.generate` (two brands, clicks through KOL posts and
shares, share cascades, purchases, a heavy head of active users), and leave through the
SDK's :class:`~pipeline.sdk.KafkaEmitter`: batches of ``batch`` events packed into one
envelope per events-topic partition, idempotent producer, ``acks=all``. So the measured
path starts where the issue says it does, at the SDK, and the worker reads the envelopes
the SDK really makes (about ``batch / partitions`` events each), not hand-made ones.
"""

from __future__ import annotations

import datetime as dt
import math
import time
from collections.abc import Callable

from kafka import KafkaConsumer, TopicPartition

from pipeline.contract.events import AnyEvent
from pipeline.sdk import KafkaEmitter
from pipeline.sdk.base import Emitter
from tests.integration.pipeline_env import PipelineEnv
from tests.scenario import generate

#: Events per SDK batch: the most one envelope may carry, as a busy backend would use.
SDK_BATCH = 1000
#: Seconds between a paced sender's flushes of the SDK (a backend flushing on a timer).
TICK = 0.05


def scenario_events(
    n_events: int, n_users: int, seed: int = 8, brands: tuple[str, ...] = ("acme", "bright")
) -> list[AnyEvent]:
    """``n_events`` events about one second of event time apart, in event-time order.

    Dense traffic keeps a whole backlog far inside the allowed lateness (one day by
    default: docs/streaming.md, "Known limit"), as a live campaign day would be, and no
    duplicates, so every event makes exactly one ``events`` row."""
    return list(
        generate(
            seed=seed,
            n_events=n_events,
            n_users=n_users,
            spacing_s=1,
            max_delay_s=60,
            duplicate_rate=0.0,
            heavy_share=0.05,
            brands=brands,
        ).events
    )


def users_of(events: list[AnyEvent]) -> int:
    """Distinct (brand, user) pairs: the user states a worker has to keep."""
    return len({(e.brand_id, e.user_id) for e in events})


def emitter(penv: PipelineEnv, batch: int = SDK_BATCH) -> KafkaEmitter:
    """The SDK's Kafka emitter, pointed at the namespace's events topic."""
    s = penv.settings()
    return KafkaEmitter(bootstrap_servers=s.kafka_bootstrap, topic=s.topic_events, batch_size=batch)


def emit(penv: PipelineEnv, events: list[AnyEvent], batch: int = SDK_BATCH) -> int:
    """Send ``events`` through the SDK and wait until Kafka confirmed them all; returns the
    number of Kafka messages (envelopes) the events topic received."""
    with emitter(penv, batch) as sdk:
        for event in events:
            sdk.track(event)
        sdk.flush()
    return messages_in(penv)


def paced(
    sdk: Emitter,
    events: list[AnyEvent],
    rate: float,
    seconds: float | None = None,
    live: bool = False,
    on_track: Callable[[str, float], None] | None = None,
) -> tuple[int, float]:
    """Track ``events`` at ``rate`` per second (for at most ``seconds``), flushing the SDK
    every :data:`TICK`, as live traffic arrives; returns (events sent, seconds taken).

    ``live`` stamps each event's ``occurred_at`` with the moment it is tracked;
    ``on_track(event_id, event_time)`` is told of every event as it goes."""
    limit = math.inf if seconds is None else seconds
    sent = 0
    start = time.monotonic()
    while (elapsed := time.monotonic() - start) < limit and sent < len(events):
        due = min(len(events), math.floor(rate * elapsed) + 1)
        while sent < due:
            event = events[sent]
            if live:
                event = event.model_copy(update={"occurred_at": dt.datetime.now(dt.UTC)})
            if on_track is not None:
                on_track(event.event_id, event.occurred_at.timestamp())
            sdk.track(event)
            sent += 1
        sdk.flush()
        time.sleep(max(0.0, TICK - (time.monotonic() - start - elapsed)))
    sdk.flush()
    return sent, time.monotonic() - start


def messages_in(penv: PipelineEnv) -> int:
    """Messages in the namespace's events topic (sum of the partitions' end offsets)."""
    s = penv.settings()
    consumer = KafkaConsumer(bootstrap_servers=s.kafka_bootstrap)
    try:
        tps = [TopicPartition(s.topic_events, p) for p in range(s.topic_partitions)]
        return sum(consumer.end_offsets(tps).values())
    finally:
        consumer.close()
