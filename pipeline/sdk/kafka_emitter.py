"""The Kafka emitter: events straight to the events topic with kafka-python.

The producer writes with ``acks=all``; within its delivery timeout kafka-python retries by
itself. When a send still fails (a broker down longer than the delivery timeout), the
emitter resends the *same envelope bytes* with backoff, up to ``max_attempts``: same bytes,
same event ids, so the worst a retry can do is write a copy that the pipeline drops by
``event_id``. That dedup is also why the producer is not idempotent (see the config).

Envelopes are packed per partition (:mod:`pipeline.contract.envelopes`): a user's events go to one
partition of the events topic, in order. The message key is the brand id when the envelope
holds one brand (routing uses the explicit partition either way).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pipeline.contract.envelopes import Packed, pack_envelopes
from pipeline.errors import ServiceUnavailable
from pipeline.sdk.base import DeliveryError, Emitter
from pipeline.sdk.retry import Backoff

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _InFlight:
    """An envelope handed to the producer: its delivery future, or the error of the send."""

    packed: Packed
    attempts: int
    future: Any = None
    error: BaseException | None = None


class KafkaEmitter(Emitter):
    """Emit events to Kafka; ``flush()`` blocks until Kafka confirmed them all.

    ``bootstrap_servers`` and ``topic`` default to the siyu settings
    (``SIYU_KAFKA_BOOTSTRAP``, ``SIYU_TOPIC_EVENTS``). Other keyword arguments go to
    ``kafka.KafkaProducer``. ``producer`` replaces the producer (tests).
    """

    def __init__(
        self,
        brand_id: str | None = None,
        *,
        bootstrap_servers: str | None = None,
        topic: str | None = None,
        batch_size: int = 500,
        linger_ms: int = 20,
        delivery_timeout_s: float = 30.0,
        max_attempts: int = 5,
        max_in_flight: int = 64,
        backoff: Backoff | None = None,
        sleep: Callable[[float], None] = time.sleep,
        producer: Any = None,
        **producer_config: Any,
    ) -> None:
        super().__init__(brand_id, batch_size)
        if bootstrap_servers is None or topic is None:
            from pipeline.settings import load_settings

            s = load_settings()
            bootstrap_servers = bootstrap_servers or s.kafka_bootstrap
            topic = topic or s.topic_events
        self.topic = topic
        self.max_attempts = max(1, max_attempts)
        self.max_in_flight = max(1, max_in_flight)
        self.backoff = backoff or Backoff()
        self._sleep = sleep
        self._wait_s = delivery_timeout_s + 10
        self._partitions: int | None = None
        self._in_flight: list[_InFlight] = []
        if producer is None:
            from kafka import KafkaProducer
            from kafka.errors import KafkaError

            delivery_ms = int(delivery_timeout_s * 1000)
            config: dict[str, Any] = {
                "client_id": "siyu-sdk",
                "linger_ms": linger_ms,
                # kafka-python requires delivery >= linger + request timeout.
                "request_timeout_ms": max(1000, min(30_000, delivery_ms - linger_ms)),
                "delivery_timeout_ms": delivery_ms,
                "max_request_size": 1_048_576,
                # kafka-python waits up to 30 s between reconnects by default; a broker
                # that restarted would sit idle that long.
                "reconnect_backoff_max_ms": 5000,
                **producer_config,
                # Not negotiable: flush() promises what all in-sync replicas confirmed.
                "acks": "all",
                # Off on purpose: the pipeline drops copies by event_id, so producer
                # idempotence adds nothing here, and kafka-python's idempotent producer
                # (3.0.x) stops sending for good once a batch expires during a broker
                # outage (its producer id is reset and never fetched again).
                "enable_idempotence": False,
            }
            try:
                producer = KafkaProducer(bootstrap_servers=bootstrap_servers, **config)
            except KafkaError as err:
                raise ServiceUnavailable(
                    f"Kafka at {bootstrap_servers} is not reachable ({type(err).__name__})"
                ) from None
        self._producer = producer

    # --- Emitter ----------------------------------------------------------------------------

    def _in_transit(self) -> int:
        return sum(len(f.packed.events) for f in self._in_flight)

    def _send_buffered(self) -> None:
        partitions = self._partition_count()
        if partitions is None:
            return  # metadata unavailable: the events stay buffered for flush() to retry
        events, self._buffer = self._buffer, []
        for packed in pack_envelopes(events, partitions, self.batch_size):
            self._submit(packed, attempts=1)
        if len(self._in_flight) > self.max_in_flight:
            self._deliver_all()  # back-pressure: the caller waits rather than memory grows

    def _deliver_all(self) -> None:
        if self._buffer:
            self._send_buffered()
            if self._buffer:  # still no metadata
                self._partition_count(raise_error=True)
        try:
            self._producer.flush(timeout=self._wait_s)
        except Exception as err:  # a timeout here shows again on the futures below
            log.warning("kafka flush: %r", err)
        while self._in_flight:
            current, self._in_flight = self._in_flight, []
            failed: list[tuple[_InFlight, BaseException]] = []
            # One deadline for the round: waiting the full timeout per envelope would make
            # a dead broker cost (envelopes x timeout) before the first resend.
            deadline = time.monotonic() + self._wait_s
            for f in current:
                outcome = f.error or self._outcome(f.future, deadline)
                if outcome is None:
                    self._settled(len(f.packed.events))
                else:
                    failed.append((f, outcome))
            if not failed:
                return
            retry = [(f, e) for f, e in failed if f.attempts < self.max_attempts]
            given_up = [(f, e) for f, e in failed if f.attempts >= self.max_attempts]
            if given_up:
                # Every failed event back to the front of the buffer, same ids, for a later
                # flush; nothing is left half in flight.
                self._buffer[:0] = [ev for f, _ in failed for ev in f.packed.events]
                raise DeliveryError(len(self._buffer), repr(given_up[0][1]))
            attempt = max(f.attempts for f, _ in retry)
            delay = self.backoff.delay(attempt)
            log.warning(
                "%d envelope(s) not confirmed by Kafka (%r); resending in %.1fs (attempt %d/%d)",
                len(retry),
                retry[0][1],
                delay,
                attempt + 1,
                self.max_attempts,
            )
            self._sleep(delay)
            for f, _ in retry:
                self._submit(f.packed, attempts=f.attempts + 1)
            try:
                self._producer.flush(timeout=self._wait_s)
            except Exception as err:
                log.warning("kafka flush: %r", err)

    def _close_transport(self) -> None:
        self._producer.close(timeout=self._wait_s)

    # --- steps ------------------------------------------------------------------------------

    def _partition_count(self, raise_error: bool = False) -> int | None:
        if self._partitions is None:
            try:
                partitions = self._producer.partitions_for(self.topic)
            except Exception as err:
                if raise_error:
                    raise DeliveryError(len(self._buffer), f"no metadata: {err!r}") from None
                log.warning("no metadata for %s yet: %r", self.topic, err)
                return None
            if not partitions:
                if raise_error:
                    raise DeliveryError(len(self._buffer), f"topic {self.topic} not found")
                return None
            self._partitions = len(partitions)
        return self._partitions

    def _submit(self, packed: Packed, attempts: int) -> None:
        brands = {ev.brand_id for ev in packed.events}
        key = brands.pop().encode() if len(brands) == 1 else None
        flight = _InFlight(packed, attempts)
        try:
            flight.future = self._producer.send(
                self.topic, value=packed.value, key=key, partition=packed.partition
            )
        except Exception as err:  # buffer full for max_block_ms, producer closed, ...
            flight.error = err
        self._in_flight.append(flight)

    def _outcome(self, future: Any, deadline: float) -> BaseException | None:
        try:
            future.get(timeout=max(0.0, deadline - time.monotonic()))
        except Exception as err:
            return err
        return None
