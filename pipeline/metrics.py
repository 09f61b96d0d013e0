"""Every Prometheus metric a worker exports, declared here and nowhere else.

Names follow Prometheus conventions: the ``siyu_`` prefix, base units (seconds), ``_total``
on counters. Labels are bounded: brand, event type, reason, channel, attribution kind, table,
topic and partition, processor, agent; never a user, order, event or share id. Brand and
channel come from input, so even they are capped (:data:`MAX_LABEL_VALUES`): values beyond
the cap are counted under ``_other`` rather than growing the series count without end.

The hot path pays per batch, not per event: the worker reports each batch's facts once, to
:class:`PrometheusSensor` (the worker's :class:`~pipeline.worker.sensor.Sensor`), which
tallies them in a local dict and increments each series once. The
per-event latency histogram is a :class:`BatchHistogram` for the same reason: a batch's
observations are binned locally and added under one lock.

Everything is in :data:`REGISTRY` (not prometheus-client's global default registry), so a
process that is not a worker exports none of it by accident. Faust's web server runs on
the event loop (``web_in_thread=False``), so scrapes and updates share one thread; the
locks are there for the sink's insert thread and for safety, not for contention.

The docs list every metric: docs/metrics.md.
"""

from __future__ import annotations

import logging
import threading
import time
from bisect import bisect_left
from collections import Counter as Tally
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import HistogramMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.registry import Collector

from pipeline.contract.deadletter import DeadLetter
from pipeline.contract.events import AnyEvent
from pipeline.domain.rows import CreditRow
from pipeline.domain.rows import Row as DomainRow
from pipeline.kafka.offsets import committed_or_zero
from pipeline.worker.sensor import Sensor

log = logging.getLogger(__name__)

#: The registry ``/metrics`` serves.
REGISTRY = CollectorRegistry(auto_describe=True)
ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)

#: Most distinct values a label fed from input may take in one process (then ``_other``).
MAX_LABEL_VALUES = {"brand_id": 500, "channel": 100, "reason": 64, "kind": 16}
OTHER = "_other"

# -- Buckets --------------------------------------------------------------------------------

#: Event time to processed: live traffic takes seconds, a phone that was offline hours.
EVENT_LATENCY_BUCKETS = (
    0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0,
    3600.0, 3 * 3600.0, 6 * 3600.0, 12 * 3600.0, 86400.0, 2 * 86400.0, 7 * 86400.0,
)  # fmt: skip
#: Agent output to visible in ClickHouse: the sink waits up to sink_flush_seconds (1 s).
VISIBLE_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0, 60.0, 300.0)
INSERT_DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_DURATION_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_ROWS_BUCKETS = (1, 10, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 25000, 50000)
#: How late the event loop woke: a few ms when healthy, up to a session timeout and beyond.
LOOP_LAG_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class BatchHistogram(Collector):
    """A histogram that takes a whole batch of observations per call.

    prometheus-client's :class:`~prometheus_client.Histogram` takes one observation per
    call, each under a lock; per event that would cost more than the rest of the metrics
    together. This one bins a batch locally and adds the counts under one lock, and is
    exported as an ordinary histogram.
    """

    def __init__(
        self,
        name: str,
        documentation: str,
        buckets: Sequence[float],
        labelnames: Sequence[str] = (),
        registry: CollectorRegistry | None = REGISTRY,
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.bounds = tuple(float(b) for b in buckets)
        self.labelnames = tuple(labelnames)
        self._lock = threading.Lock()
        #: label values -> (count per bucket, last one +Inf; sum)
        self._series: dict[tuple[str, ...], tuple[list[int], list[float]]] = {}
        if registry is not None:
            registry.register(self)

    def observe_many(self, values: Iterable[float], labels: Sequence[str] = ()) -> None:
        """Add every value of ``values`` (one lock for all of them)."""
        bounds = self.bounds
        counts = [0] * (len(bounds) + 1)
        total = 0.0
        for v in values:
            counts[bisect_left(bounds, v)] += 1
            total += v
        self.add_counts(counts, total, labels)

    def observe(self, value: float, weight: int = 1, labels: Sequence[str] = ()) -> None:
        """Add ``value`` ``weight`` times."""
        counts = [0] * (len(self.bounds) + 1)
        counts[bisect_left(self.bounds, value)] = weight
        self.add_counts(counts, value * weight, labels)

    def add_counts(self, counts: Sequence[int], total: float, labels: Sequence[str] = ()) -> None:
        """Add pre-binned ``counts`` (one per bucket, then +Inf) with their sum ``total``."""
        key = tuple(labels)
        if len(key) != len(self.labelnames):
            raise ValueError(f"{self.name} takes labels {self.labelnames}, got {key}")
        with self._lock:
            series = self._series.get(key)
            if series is None:
                series = self._series[key] = ([0] * (len(self.bounds) + 1), [0.0])
            mine, sums = series
            for i, n in enumerate(counts):
                mine[i] += n
            sums[0] += total

    def describe(self) -> Iterable[Metric]:
        return [HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)]

    def collect(self) -> Iterable[Metric]:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        with self._lock:
            snapshot = [(k, list(c), s[0]) for k, (c, s) in self._series.items()]
        for key, counts, total in snapshot:
            cumulative, buckets = 0, []
            for bound, n in zip((*self.bounds, float("inf")), counts, strict=True):
                cumulative += n
                buckets.append((_bound_text(bound), float(cumulative)))
            family.add_metric(list(key), buckets, total)
        yield family


def _bound_text(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(float(bound))


# -- Ingest ---------------------------------------------------------------------------------

INGEST_MESSAGES = Counter(
    "siyu_ingest_messages_total",
    "Kafka messages read from the events topic (one event or an envelope each).",
    registry=REGISTRY,
)
EVENTS_CONSUMED = Counter(
    "siyu_events_consumed_total",
    "Events read from the events topic, valid or not (a rejected input counts once, with "
    "type '' and the brand_id it carried, or '').",
    ["brand_id", "type"],
    registry=REGISTRY,
)
EVENTS_ACCEPTED = Counter(
    "siyu_events_accepted_total",
    "Events that passed validation (duplicates included; see siyu_duplicate_events_total).",
    ["brand_id", "type"],
    registry=REGISTRY,
)
DEAD_LETTERS = Counter(
    "siyu_dead_letters_total",
    "Inputs sent to the dead-letter path, by reason, counted where they were rejected "
    "(ingest, a state agent, or the sink).",
    ["reason", "brand_id"],
    registry=REGISTRY,
)

# -- State agents ---------------------------------------------------------------------------

DUPLICATES = Counter(
    "siyu_duplicate_events_total",
    "Events the user processor had seen before (same brand and event_id) and ignored.",
    ["brand_id", "type"],
    registry=REGISTRY,
)
CLICKS = Counter(
    "siyu_clicks_total",
    "Clicks counted into user state (each event once), by brand and channel.",
    ["brand_id", "channel"],
    registry=REGISTRY,
)
PURCHASES = Counter(
    "siyu_purchases_total",
    "Purchases counted into user state (each event once), by brand and channel.",
    ["brand_id", "channel"],
    registry=REGISTRY,
)
ATTRIBUTED = Counter(
    "siyu_attributed_purchases_total",
    "Purchases credited to a touch (kind kol or referral); a credit later retracted is "
    "also counted in siyu_attribution_retractions_total, so the net is the difference.",
    ["brand_id", "kind"],
    registry=REGISTRY,
)
RETRACTIONS = Counter(
    "siyu_attribution_retractions_total",
    "Credits to a touch withdrawn because a later-arriving event changed the attribution.",
    ["brand_id", "kind"],
    registry=REGISTRY,
)
EVENT_LATENCY = BatchHistogram(
    "siyu_event_processing_latency_seconds",
    "From an event's occurred_at to the user processor applying it (each event once).",
    EVENT_LATENCY_BUCKETS,
)
BATCH_DURATION = Histogram(
    "siyu_agent_batch_duration_seconds",
    "Wall time of one agent batch (or part of one), until its output was confirmed by Kafka.",
    ["agent"],
    buckets=BATCH_DURATION_BUCKETS,
    registry=REGISTRY,
)
EVENT_LOOP_LAG = Histogram(
    "siyu_event_loop_lag_seconds",
    "How much later than asked the worker's event loop woke a sleeper (four looks a "
    "second): how long it ran without a break. Kafka heartbeats run on this loop.",
    buckets=LOOP_LAG_BUCKETS,
    registry=REGISTRY,
)
STATE_KEYS = Gauge(
    "siyu_state_keys",
    "Keys in this worker's partitions of a state table (RocksDB: its estimate).",
    ["processor"],
    registry=REGISTRY,
)
STATE_CACHE_LOOKUPS = Counter(
    "siyu_state_cache_lookups_total",
    "Keys a batch stepped messages on, by whether the worker's state cache had their parsed "
    "state (miss: parsed from the table); sweeps are not counted.",
    ["processor", "result"],
    registry=REGISTRY,
)
STATE_CACHE_EVICTIONS = Counter(
    "siyu_state_cache_evictions_total",
    "Parsed states dropped from the worker's state cache to stay within SIYU_STATE_CACHE_KEYS.",
    ["processor"],
    registry=REGISTRY,
)
CONSUMER_LAG = Gauge(
    "siyu_consumer_lag_messages",
    "Messages after the committed offset, per partition this worker owns (highwater last "
    "seen by the consumer minus committed offset).",
    ["topic", "partition"],
    registry=REGISTRY,
)

# -- Sink -----------------------------------------------------------------------------------

SINK_BATCH_ROWS = Histogram(
    "siyu_sink_batch_rows",
    "Rows per ClickHouse insert.",
    ["table"],
    buckets=BATCH_ROWS_BUCKETS,
    registry=REGISTRY,
)
SINK_ROWS = Counter(
    "siyu_sink_rows_inserted_total",
    "Rows ClickHouse accepted (re-deliveries after a crash count again; the tables do not).",
    ["table"],
    registry=REGISTRY,
)
INSERT_DURATION = Histogram(
    "siyu_sink_insert_duration_seconds",
    "Duration of one successful ClickHouse insert statement.",
    ["table"],
    buckets=INSERT_DURATION_BUCKETS,
    registry=REGISTRY,
)
INSERT_FAILURES = Counter(
    "siyu_sink_insert_failures_total",
    "Failed insert attempts: kind 'unavailable' is retried with backoff, kind 'refused' "
    "means ClickHouse refused the data and the batch is split to find the bad rows.",
    ["table", "kind"],
    registry=REGISTRY,
)
VISIBLE_LATENCY = BatchHistogram(
    "siyu_visible_latency_seconds",
    "From an agent publishing a row batch (its Kafka timestamp) to ClickHouse accepting "
    "its insert, per row.",
    VISIBLE_LATENCY_BUCKETS,
    ["table"],
)
LAST_FLUSH = Gauge(
    "siyu_sink_last_flush_timestamp_seconds",
    "When the sink last inserted and committed a batch (Unix time).",
    registry=REGISTRY,
)


# -- Bounded labels -------------------------------------------------------------------------

_seen: dict[str, set[str]] = {name: set() for name in MAX_LABEL_VALUES}
_label_lock = threading.Lock()


def bounded(label: str, value: str) -> str:
    """``value`` if label ``label`` may still take it, else :data:`OTHER`."""
    seen = _seen[label]
    if value in seen:
        return value
    with _label_lock:
        if len(seen) < MAX_LABEL_VALUES[label]:
            seen.add(value)
            return value
    if OTHER not in seen:
        seen.add(OTHER)
        log.warning("label %s has %d values; more are counted as %s", label, len(seen), OTHER)
    return OTHER


# -- The worker's sensor: one call per batch ------------------------------------------------


class PrometheusSensor(Sensor):
    """Counts the worker's facts (:class:`~pipeline.worker.sensor.Sensor`) into the metrics
    above. ``clock``: wall time in POSIX seconds, for the events' processing latency."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock

    def on_ingest(
        self,
        messages: int,
        accepted: Sequence[AnyEvent],
        dead_letters: Sequence[DeadLetter],
        seconds: float,
    ) -> None:
        INGEST_MESSAGES.inc(messages)
        by_type: Tally[tuple[str, str]] = Tally((ev.brand_id, ev.type) for ev in accepted)
        consumed = by_type.copy()
        for (brand, _), n in _dead_letter_tally(dead_letters).items():
            consumed[(brand, "")] += n
        for (brand, etype), n in by_type.items():
            EVENTS_ACCEPTED.labels(bounded("brand_id", brand), etype).inc(n)
        for (brand, etype), n in consumed.items():
            EVENTS_CONSUMED.labels(bounded("brand_id", brand), etype).inc(n)
        record_dead_letters(dead_letters)
        BATCH_DURATION.labels("ingest").observe(seconds)

    def on_events_applied(self, events: Sequence[AnyEvent], duplicates: Sequence[AnyEvent]) -> None:
        for (brand, etype), n in Tally((ev.brand_id, ev.type) for ev in duplicates).items():
            DUPLICATES.labels(bounded("brand_id", brand), etype).inc(n)
        clicks: Tally[tuple[str, str]] = Tally()
        purchases: Tally[tuple[str, str]] = Tally()
        now = self.clock()
        latencies: list[float] = []
        for ev in events:
            if ev.type == "click":
                clicks[(ev.brand_id, ev.channel)] += 1
            elif ev.type == "purchase":
                purchases[(ev.brand_id, ev.channel)] += 1
            latencies.append(max(0.0, now - ev.occurred_ts))
        for counter, tally in ((CLICKS, clicks), (PURCHASES, purchases)):
            for (brand, channel), n in tally.items():
                counter.labels(bounded("brand_id", brand), bounded("channel", channel)).inc(n)
        if latencies:
            EVENT_LATENCY.observe_many(latencies)

    def on_state_batch(
        self,
        processor: str,
        rows: Sequence[DomainRow],
        dead_letters: Sequence[DeadLetter],
        seconds: float,
    ) -> None:
        attributed: Tally[tuple[str, str]] = Tally()
        retracted: Tally[tuple[str, str]] = Tally()
        for row in rows:
            if isinstance(row, CreditRow) and row.kind != "organic":
                (attributed if row.sign > 0 else retracted)[(row.brand_id, row.kind)] += 1
        for (brand, kind), n in attributed.items():
            ATTRIBUTED.labels(bounded("brand_id", brand), bounded("kind", kind)).inc(n)
        for (brand, kind), n in retracted.items():
            RETRACTIONS.labels(bounded("brand_id", brand), bounded("kind", kind)).inc(n)
        record_dead_letters(dead_letters)
        BATCH_DURATION.labels(f"state-{processor}").observe(seconds)

    def on_state_cache(self, processor: str, lookups: int, misses: int, evictions: int) -> None:
        if misses:
            STATE_CACHE_LOOKUPS.labels(processor, "miss").inc(misses)
        if lookups > misses:
            STATE_CACHE_LOOKUPS.labels(processor, "hit").inc(lookups - misses)
        if evictions:
            STATE_CACHE_EVICTIONS.labels(processor).inc(evictions)

    def on_loop_lag(self, seconds: float) -> None:
        EVENT_LOOP_LAG.observe(seconds)


#: The worker's sensor.
SENSOR = PrometheusSensor()


def record_dead_letters(letters: Sequence[DeadLetter]) -> None:
    """Count dead letters by reason and brand."""
    for (brand, reason), n in _dead_letter_tally(letters).items():
        dead_letter(reason, brand, n)


def dead_letter(reason: str, brand_id: str = "", n: int = 1) -> None:
    """Count ``n`` dead letters of ``reason``."""
    DEAD_LETTERS.labels(bounded("reason", reason), bounded("brand_id", brand_id)).inc(n)


def _dead_letter_tally(letters: Sequence[DeadLetter]) -> Tally[tuple[str, str]]:
    return Tally((dl.brand_id, dl.reason) for dl in letters)


# -- The sink -------------------------------------------------------------------------------


def record_insert(table: str, seconds: float) -> None:
    """One successful insert statement into ``table`` that took ``seconds``."""
    INSERT_DURATION.labels(table).observe(seconds)


def record_insert_failure(table: str, kind: str) -> None:
    """One failed insert attempt (``unavailable`` or ``refused``)."""
    INSERT_FAILURES.labels(table, kind).inc()


def record_flushed(table: str, rows: int, published_ms: Sequence[tuple[int, int]]) -> None:
    """``rows`` rows of ``table`` are in ClickHouse; ``published_ms`` lists (Kafka timestamp in
    ms, rows) of the messages they came from."""
    SINK_BATCH_ROWS.labels(table).observe(rows)
    SINK_ROWS.labels(table).inc(rows)
    now_ms = time.time() * 1000
    counts = [0] * (len(VISIBLE_LATENCY.bounds) + 1)
    total = 0.0
    for ts_ms, n in published_ms:
        seconds = max(0.0, now_ms - ts_ms) / 1000
        counts[bisect_left(VISIBLE_LATENCY.bounds, seconds)] += n
        total += seconds * n
    VISIBLE_LATENCY.add_counts(counts, total, (table,))


def record_flush_done() -> None:
    LAST_FLUSH.set_to_current_time()


# -- Sampled gauges -------------------------------------------------------------------------


def set_consumer_lag(lags: Iterable[tuple[str, int, int]]) -> None:
    """Replace every lag series by ``(topic, partition, lag)``: partitions that moved to
    another worker must disappear from this one."""
    CONSUMER_LAG.clear()
    for topic, partition, lag in lags:
        CONSUMER_LAG.labels(topic, str(partition)).set(max(0, lag))


def set_state_keys(sizes: Iterable[tuple[str, int]]) -> None:
    for processor, n in sizes:
        STATE_KEYS.labels(processor).set(n)


#: The text format every Prometheus version parses (what generate_latest writes).
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4


def exposition() -> bytes:
    """The text exposition of :data:`REGISTRY` (what ``/metrics`` returns)."""
    return generate_latest(REGISTRY)


def lag_of(assigned: Iterable[Any], highwater: Any, committed: Any) -> Iterator[tuple[Any, int]]:
    """``(tp, highwater - committed)`` for each assigned partition whose highwater is known;
    a partition never committed counts from offset 0."""
    for tp in assigned:
        end = highwater(tp)
        if end is None:
            continue
        done = committed(tp)
        yield tp, int(end) - committed_or_zero(done)
