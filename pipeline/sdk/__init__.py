"""The Python SDK for backend emitters: typed events in, the events topic out.

Two emitters share one interface (:class:`~pipeline.sdk.base.Emitter`): ``track_click``,
``track_share``, ``track_purchase`` (or ``track`` of a ready event) buffer events;
a full batch is sent as envelopes; ``flush()`` blocks until every tracked event is
confirmed, retrying with backoff; ``close()`` (or leaving a ``with`` block) flushes.

- :class:`KafkaEmitter` writes straight to Kafka (kafka-python, ``acks=all``);
- :class:`HttpEmitter` posts to the collector with the brand's API key.

An ``event_id`` is made once, when the event is tracked, and travels with the event
through every retry, so a retried send can only produce copies the pipeline drops by
``event_id``. Purchases and shares get ids derived from their order or share id, so
tracking the same order twice (say after a crash of the caller) is also absorbed.

See docs/collector.md ("The Python SDK").
"""

from pipeline.sdk.base import DeliveryError, Emitter, FlushResult, Rejected
from pipeline.sdk.http_emitter import HttpEmitter, RequestRefused
from pipeline.sdk.ids import event_id_for, new_event_id
from pipeline.sdk.kafka_emitter import KafkaEmitter
from pipeline.sdk.track import InvalidEvent, click_event, purchase_event, share_event

__all__ = [
    "DeliveryError",
    "Emitter",
    "FlushResult",
    "HttpEmitter",
    "InvalidEvent",
    "KafkaEmitter",
    "Rejected",
    "RequestRefused",
    "click_event",
    "event_id_for",
    "new_event_id",
    "purchase_event",
    "share_event",
]
