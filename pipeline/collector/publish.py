"""Accepted events and dead letters to Kafka, with ``acks=all``, or a clear "not now".

Accepted events of a request go to the events topic as envelopes
(:mod:`pipeline.contract.envelopes`): each user's events to a partition chosen by brand and user,
at most one envelope per partition per request unless the count or byte limit splits it. The
message key is the brand id; routing is by the explicit partition, so the key is only for people
reading the topic. Rejected events go to the dead-letter topic with their original bytes and the
usual headers (:mod:`pipeline.contract.deadletter`), sourced as topic ``collector``, partition 0,
offset = the request id, index = the event's position in the request.

Before anything is handed to the producer, the leaders of the partitions about to be
written must be reachable. When a broker is down the request is refused at once with
nothing enqueued, instead of leaving messages in the producer that Kafka might still write
after the client was told 503.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any, Literal

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from aiokafka.structs import TopicPartition

from pipeline.contract.deadletter import H_BRAND, Source, dead_letter_headers
from pipeline.contract.envelopes import pack_envelopes
from pipeline.contract.events import AnyEvent, Reject
from pipeline.contract.partitioning import partition_for
from pipeline.errors import ServiceUnavailable
from pipeline.settings import Settings

log = logging.getLogger(__name__)

FailureKind = Literal["timeout", "unavailable", "error"]

#: ``siyu-source-topic`` of dead letters the collector writes.
COLLECTOR_SOURCE = "collector"


class KafkaUnavailable(Exception):
    """Kafka did not take or confirm a request's messages; ``kind`` says how."""

    def __init__(self, kind: FailureKind, detail: str) -> None:
        super().__init__(detail)
        self.kind: FailureKind = kind
        self.detail = detail


class Publisher:
    """The collector's one Kafka producer (idempotent, ``acks=all``)."""

    def __init__(self, s: Settings) -> None:
        self._bootstrap = s.kafka_bootstrap
        self.events_topic = s.topic_events
        self.dead_topic = s.topic_dead_letters
        self._timeout = s.collector_send_timeout_s
        self._producer: Any = None

    async def start(self) -> None:
        producer = AIOKafkaProducer(
            bootstrap_servers=self._bootstrap,
            client_id="siyu-collector",
            acks="all",
            enable_idempotence=True,
            # Requests arrive already batched; a short linger lets concurrent requests share
            # one produce request without adding noticeable latency.
            linger_ms=5,
            max_batch_size=1_048_576,
            max_request_size=1_048_576,
        )
        try:
            await producer.start()
        except (KafkaError, OSError) as err:
            await producer.stop()
            raise ServiceUnavailable(
                f"Kafka at {self._bootstrap} is not reachable ({type(err).__name__}); "
                "start the local stack with `make up`, or set SIYU_KAFKA_BOOTSTRAP"
            ) from None
        self._producer = producer

    async def stop(self) -> None:
        """Deliver what is still in the producer (bounded by its timeouts), then close."""
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    async def send(
        self,
        brand: str,
        request_id: int,
        received_ms: int,
        accepted: Sequence[AnyEvent],
        rejects: Sequence[Reject],
        futures: list[asyncio.Future[Any]],
    ) -> None:
        """Hand a request's messages to the producer, appending each delivery future to
        ``futures`` as soon as it exists (so a caller that times out still knows what is
        in flight). Raises :class:`KafkaUnavailable` when a partition leader is not reachable
        or the topics' metadata is not available."""
        producer = self._producer
        if producer is None:
            raise KafkaUnavailable("unavailable", "the collector is shutting down")
        try:
            n_events = len(await producer.partitions_for(self.events_topic))
            n_dead = len(await producer.partitions_for(self.dead_topic)) if rejects else 0
        except KafkaError as err:
            raise KafkaUnavailable("unavailable", f"no metadata for the topics ({err})") from None
        envelopes = pack_envelopes(accepted, n_events)
        dead_partition = partition_for(brand, "", n_dead) if rejects else 0
        targets = {TopicPartition(self.events_topic, e.partition) for e in envelopes}
        if rejects:
            targets.add(TopicPartition(self.dead_topic, dead_partition))
        await self._check_leaders(targets)
        key = brand.encode()
        for env in envelopes:
            futures.append(
                await producer.send(self.events_topic, env.value, key=key, partition=env.partition)
            )
        source = Source(COLLECTOR_SOURCE, 0, request_id, received_ms)
        for reject in rejects:
            headers = [
                (k, brand.encode() if k == H_BRAND else v)
                for k, v in dead_letter_headers(reject, source)
            ]
            futures.append(
                await producer.send(
                    self.dead_topic,
                    reject.payload,
                    key=key,
                    partition=dead_partition,
                    headers=headers,
                )
            )

    async def _check_leaders(self, targets: set[TopicPartition]) -> None:
        client = self._producer.client
        leaders = {tp: client.cluster.leader_for_partition(tp) for tp in targets}
        missing = sorted(
            f"{tp.topic}[{tp.partition}]" for tp, n in leaders.items() if n in (None, -1)
        )
        if missing:
            client.force_metadata_update()
            raise KafkaUnavailable("unavailable", f"no leader for {', '.join(missing)}")
        for node in set(leaders.values()):
            if not await client.ready(node):
                raise KafkaUnavailable("unavailable", f"Kafka broker {node} is not reachable")

    async def readiness(self) -> tuple[bool, str]:
        """Whether Kafka answers now and both topics have a leader for every partition."""
        producer = self._producer
        if producer is None:
            return False, "the producer is not running"
        try:
            md = await asyncio.wait_for(producer.client.fetch_all_metadata(), self._timeout)
        except (KafkaError, OSError, TimeoutError) as err:
            return False, f"Kafka at {self._bootstrap} does not answer ({type(err).__name__})"
        for topic in (self.events_topic, self.dead_topic):
            parts = md.partitions_for_topic(topic)
            if not parts:
                return False, f"topic {topic} does not exist (run `siyu topics`)"
            leaderless = [
                p for p in parts if md.leader_for_partition(TopicPartition(topic, p)) in (None, -1)
            ]
            if leaderless:
                return False, f"topic {topic} has no leader for partitions {sorted(leaderless)}"
        return True, f"Kafka at {self._bootstrap} answers; {self.events_topic} is writable"
