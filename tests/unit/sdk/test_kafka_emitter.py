"""The Kafka emitter's batching and retry logic, over a scripted stand-in for the producer.

The real producer is exercised against the real broker in
tests/integration/test_sdk_kafka.py; here a stand-in fails sends on demand so the retry
rules can be checked exactly: same bytes resent, backoff between attempts, nothing dropped.
"""

from __future__ import annotations

from typing import Any

import pytest

from pipeline.contract.events import decode_message
from pipeline.sdk import DeliveryError, KafkaEmitter
from pipeline.sdk.retry import Backoff


class _Future:
    def __init__(self, error: Exception | None) -> None:
        self.error = error

    def get(self, timeout: float | None = None) -> object:
        if self.error is not None:
            raise self.error
        return object()


class _Producer:
    """Records sends; the first ``fail`` sends fail on delivery."""

    def __init__(self, partitions: int = 3, fail: int = 0, metadata: bool = True) -> None:
        self.partitions = partitions
        self.fail = fail
        self.metadata = metadata
        self.sent: list[tuple[str, bytes, bytes | None, int]] = []
        self.closed = False

    def partitions_for(self, topic: str) -> set[int]:
        if not self.metadata:
            raise TimeoutError("no metadata")
        return set(range(self.partitions))

    def send(self, topic: str, value: bytes, key: bytes | None, partition: int) -> _Future:
        self.sent.append((topic, value, key, partition))
        if self.fail > 0:
            self.fail -= 1
            return _Future(TimeoutError("delivery timed out"))
        return _Future(None)

    def flush(self, timeout: float | None = None) -> None:
        pass

    def close(self, timeout: float | None = None) -> None:
        self.closed = True


def _emitter(producer: _Producer, sleeps: list[float], **kw: Any) -> KafkaEmitter:
    return KafkaEmitter(
        "acme",
        bootstrap_servers="unused:1",
        topic="events",
        producer=producer,
        sleep=sleeps.append,
        backoff=Backoff(initial_s=1, maximum_s=8, multiplier=2),
        **kw,
    )


def _ids(values: list[bytes]) -> list[str]:
    return [e.event_id for v in values for e in decode_message(v).events]


def test_a_full_batch_is_sent_as_envelopes_and_flush_confirms_all() -> None:
    producer, sleeps = _Producer(), []
    em = _emitter(producer, sleeps, batch_size=10)
    ids = [em.track_click(f"u{i}", "app") for i in range(25)]
    assert len(producer.sent) > 0  # two full batches went out without a flush
    assert sorted(_ids([s[1] for s in producer.sent])) == sorted(ids[:20])
    assert em.pending == 25
    result = em.flush()
    assert result.delivered == 25 and em.pending == 0
    assert sorted(_ids([s[1] for s in producer.sent])) == sorted(ids)
    assert all(s[2] == b"acme" and s[0] == "events" for s in producer.sent)
    assert all(len(decode_message(s[1]).events) <= 10 for s in producer.sent)
    assert sleeps == []


def test_failed_sends_are_resent_with_the_same_bytes_after_backoff() -> None:
    producer, sleeps = _Producer(partitions=1, fail=2), []
    em = _emitter(producer, sleeps, max_attempts=5)
    ids = [em.track_purchase(f"u{i}", "app", f"o{i}", "9.90", "CNY") for i in range(5)]
    assert em.flush().delivered == 5
    values = [s[1] for s in producer.sent]
    assert len(values) == 3 and values[0] == values[1] == values[2]
    assert _ids(values[-1:]) == ids
    assert len(sleeps) == 2 and 0.5 <= sleeps[0] <= 1 and 1 <= sleeps[1] <= 2


def test_exhausted_retries_raise_and_keep_the_events_for_the_next_flush() -> None:
    producer, sleeps = _Producer(partitions=2, fail=100), []
    em = _emitter(producer, sleeps, max_attempts=3)
    ids = {em.track_click(f"u{i}", "app") for i in range(8)}
    with pytest.raises(DeliveryError) as err:
        em.flush()
    assert err.value.undelivered == 8 and em.pending == 8
    assert len(sleeps) == 2  # attempts 2 and 3 waited; the third failure gave up
    producer.fail = 0
    sent_before = len(producer.sent)
    assert em.flush().delivered == 8
    assert set(_ids([s[1] for s in producer.sent[sent_before:]])) == ids


def test_without_metadata_events_stay_buffered_until_flush_can_send() -> None:
    producer, sleeps = _Producer(metadata=False), []
    em = _emitter(producer, sleeps, batch_size=2)
    for i in range(3):
        em.track_click(f"u{i}", "app")
    assert producer.sent == [] and em.pending == 3
    with pytest.raises(DeliveryError, match="no metadata"):
        em.flush()
    producer.metadata = True
    assert em.flush().delivered == 3


def test_close_flushes_and_closes_and_refuses_later_tracks() -> None:
    producer, sleeps = _Producer(), []
    with _emitter(producer, sleeps) as em:
        em.track_share("u1", "wechat_group", "s-1")
    assert producer.closed and len(producer.sent) == 1
    with pytest.raises(RuntimeError, match="closed"):
        em.track_click("u1", "app")


def test_the_in_flight_limit_makes_track_wait_for_confirmation() -> None:
    producer, sleeps = _Producer(partitions=1), []
    em = _emitter(producer, sleeps, batch_size=1, max_in_flight=3)
    for i in range(4):
        em.track_click(f"u{i}", "app")
    assert em.pending == 0  # the fourth envelope made track() settle the in-flight ones
