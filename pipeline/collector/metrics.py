"""The collector's Prometheus metrics (``siyu_collector_*``), in a registry of its own.

Labels are bounded: HTTP status codes, reject reasons (an enum), and brands taken from the
configured keys, never from a request body, so a client cannot mint label values.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class CollectorMetrics:
    """Every metric of one collector; a registry per instance keeps tests independent."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "siyu_collector_requests",
            "Requests answered, by HTTP status.",
            ["status"],
            registry=r,
        )
        self.accepted = Counter(
            "siyu_collector_events_accepted",
            "Events confirmed by Kafka and reported accepted, by brand.",
            ["brand"],
            registry=r,
        )
        self.rejected = Counter(
            "siyu_collector_events_rejected",
            "Events rejected (and dead-lettered), by brand and reason.",
            ["brand", "reason"],
            registry=r,
        )
        self.latency = Histogram(
            "siyu_collector_request_seconds",
            "Time from request to response of POST /v1/events.",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=r,
        )
        self.kafka_failures = Counter(
            "siyu_collector_kafka_send_failures",
            "Requests whose messages Kafka did not confirm, by kind (timeout, unavailable, error).",
            ["kind"],
            registry=r,
        )
        self.inflight_requests = Gauge(
            "siyu_collector_inflight_requests",
            "Requests in flight (reading, or waiting for Kafka).",
            registry=r,
        )
        self.inflight_bytes = Gauge(
            "siyu_collector_inflight_bytes",
            "Request bytes held in flight.",
            registry=r,
        )
        self.batch_events = Histogram(
            "siyu_collector_request_events",
            "Events per accepted request body.",
            buckets=(1, 2, 5, 10, 50, 100, 250, 500, 1000),
            registry=r,
        )
