"""The watermark ingest announces: event-time progress whose consequences have been processed.

The domain core's contract (docs/domain.md) is that when a step sees watermark ``W``, the
messages caused by events older than ``W`` have been delivered. Announcing the raw progress
of ingest breaks it when a backlog is read fast: ingest runs days of event time ahead while
the messages between the state agents (user ↔ share ↔ sharer) still queue, and a state
agent that already moved on expires history those messages need.

So ingest announces progress only once its consequences are through, judged from Kafka's own
bookkeeping rather than from any agent's memory (several workers may share the work):

1. every poll, ingest takes the progress of what it has *published* so far, and the end
   offsets of the ``by-*`` topics (which then include those envelopes);
2. when the group's committed offsets reach those ends, everything published before them
   has been processed, and whatever that caused is in the topics: take the ends again;
3. after ``hops`` such rounds, every message up to ``hops`` steps down a causal chain
   (event → user → share → user → sharer → user, or down a chain of re-shares) has been
   processed, and the progress is announced.

Under live load this delays the watermark by a few commit intervals (seconds); reading a
backlog, it keeps every state agent's watermark behind what the others still have to say.
A causal chain longer than ``hops`` (a re-share chain deeper than ``hops`` minus three)
could still be overtaken; ``SIYU_WATERMARK_HOPS`` raises the bound.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pipeline.domain import NO_WATERMARK
from pipeline.kafka.offsets import OffsetReader, Partition, committed_or_zero
from pipeline.settings import Settings
from pipeline.worker.relay import Router, watermark_relay

log = logging.getLogger(__name__)


@dataclass
class _Round:
    progress: dict[int, int]
    target: dict[Partition, int]
    hops_left: int


@dataclass
class ConfirmedProgress:
    """Per events partition, the progress whose consequences have been processed."""

    hops: int
    confirmed: dict[int, int] = field(default_factory=dict)
    _rounds: list[_Round] = field(default_factory=list)
    _last_started: dict[int, int] | None = None

    def observe(
        self,
        published: Mapping[int, int],
        committed: Mapping[Partition, int | None],
        ends: Mapping[Partition, int],
    ) -> dict[int, int]:
        """One poll: ``published`` is ingest's progress over what Kafka confirmed before the
        offsets were read; ``committed`` and ``ends`` are the group's committed offsets and
        the end offsets of every partition of the ``by-*`` topics. Returns the confirmed
        progress (also in :attr:`confirmed`)."""
        kept: list[_Round] = []
        for r in self._rounds:
            if all(committed_or_zero(committed.get(tp)) >= end for tp, end in r.target.items()):
                r.hops_left -= 1
                if r.hops_left == 0:
                    for p, t in r.progress.items():
                        if t > self.confirmed.get(p, t - 1):
                            self.confirmed[p] = t
                    continue
                r.target = dict(ends)
            kept.append(r)
        self._rounds = kept
        if published and published != self._last_started:
            self._rounds.append(_Round(dict(published), dict(ends), self.hops))
            self._last_started = dict(published)
        return self.confirmed


class WatermarkAnnouncer:
    """Ingest's event-time progress, and its announcement to every state partition.

    Per events-topic partition: :attr:`seen`, the largest event time ingested; the part of
    it whose relays Kafka confirmed (:meth:`published`); and the part whose consequences all
    agents have processed (:class:`ConfirmedProgress`), which is what relays carry.
    """

    def __init__(self, s: Settings, router: Router, producer: Any) -> None:
        self.router = router
        self.producer = producer  # a callable returning the app's producer (set at start)
        self.seen: dict[int, int] = {}
        self._published: dict[int, int] = {}
        self._announced: dict[int, int] = {}
        self.confirmed = ConfirmedProgress(s.watermark_hops)
        self._read_offsets = OffsetReader(s.kafka_bootstrap, s.app_id)

    def announceable(self) -> dict[int, int]:
        """The progress a batch's relays carry now."""
        return dict(self.confirmed.confirmed)

    def published(self, announced: dict[int, int]) -> None:
        """A batch's relays, carrying ``announced``, were confirmed by Kafka."""
        self._published = dict(self.seen)
        self._announced = announced

    async def confirm(self) -> None:
        """Advance the announced watermark as the by-* topics are processed (see the
        module), and tell every state partition when it moved: a partition no events reach
        would not hear of it otherwise, nor would any partition of the last events'
        progress. A timer of the app's."""
        published = dict(self._published)
        if not published:
            return
        partitions = self.router.all_partitions()
        try:
            committed, ends = await asyncio.get_running_loop().run_in_executor(
                None, self._read_offsets, partitions
            )
        except Exception as err:  # no answer now: the watermark just waits
            log.debug("watermark confirmation skipped: %s", err)
            return
        confirmed = self.confirmed.observe(published, committed, ends)
        if confirmed == self._announced:
            return
        self._announced = dict(confirmed)
        relay = watermark_relay(confirmed)
        producer = self.producer()
        try:
            await asyncio.gather(
                *[await producer.send(topic, None, relay, p, None, None) for topic, p in partitions]
            )
        except Exception as err:  # the next tick, or the next batch, carries it
            log.warning("announcing the watermark failed: %s", err)
            self._announced = {}


def watermark_of(progress: Mapping[int, int], partitions: int) -> int:
    """The event-time watermark (µs) of a state partition that heard ``progress``: the least
    progress over *every* partition of the events topic. A partition nothing was heard from
    yet holds it back, so a backlog replayed one partition at a time does not make the other
    partitions' events late."""
    return min(progress.get(p, NO_WATERMARK) for p in range(partitions))
