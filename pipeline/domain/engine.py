"""An in-memory engine wiring the keyed processors together, for tests and batch runs.

The Faust topology does the same routing over Kafka topics: an ingested event
goes where :func:`route_event` says; every :class:`Addressed` message a step
returns goes to ``(processor, brand_id, key)``; rows go to the sink. The
engine holds each processor's states in a dict and delivers queued messages
either in FIFO order or, given a random generator, in a random order with
optional re-deliveries, to exercise what a partitioned, at-least-once
transport may do.

Watermark contract (what the streaming layer must also guarantee): the
watermark passed to a step is event time (µs) such that every event still to
come has ``occurred_at >= watermark - allowed_lateness``, and messages caused
by events older than that have been delivered. :meth:`Engine.feed` advances it
to the largest event time ingested, after delivering all pending messages.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

from pipeline.contract.events import AnyEvent
from pipeline.domain.chains import ShareProcessor
from pipeline.domain.config import DomainConfig
from pipeline.domain.eventtime import END_OF_TIME, NO_WATERMARK, to_us
from pipeline.domain.koc import SharerProcessor
from pipeline.domain.messages import Addressed, ProcessorName, route_event
from pipeline.domain.processor import KeyedProcessor, StepResult
from pipeline.domain.rows import (
    CreditRow,
    KocPromotionRow,
    LateEventRow,
    LoyaltyRow,
    Row,
    ShareChainRow,
    SharerRow,
    latest_snapshots,
    net_outcomes,
)
from pipeline.domain.users import UserProcessor


def build_processors(config: DomainConfig) -> dict[ProcessorName, KeyedProcessor]:
    """One processor of each kind, sharing ``config``."""
    return {
        ProcessorName.USER: UserProcessor(config),
        ProcessorName.SHARE: ShareProcessor(config),
        ProcessorName.SHARER: SharerProcessor(config),
    }


class Engine:
    """All processors in one process, connected by an in-memory queue.

    ``rng``: deliver pending messages in random order (default FIFO).
    ``redeliver_probability``: with ``rng``, chance that a delivered message is
    queued again (at-least-once delivery). ``roundtrip``: pass every state and
    message through its JSON form, as a changelog-backed table and a topic would.
    ``sink``: hand each step's rows to this callable instead of keeping them in
    :attr:`rows` (the views below then see nothing).
    """

    def __init__(
        self,
        config: DomainConfig | None = None,
        *,
        rng: random.Random | None = None,
        redeliver_probability: float = 0.0,
        roundtrip: bool = False,
        sink: Callable[[list[Row]], None] | None = None,
    ) -> None:
        self.config = config or DomainConfig()
        self.processors = build_processors(self.config)
        self.states: dict[ProcessorName, dict[tuple[str, str], Any]] = {
            name: {} for name in self.processors
        }
        self.rows: list[Row] = []
        self.watermark_us = NO_WATERMARK
        self.max_event_us = NO_WATERMARK
        self.steps = 0
        self._rng = rng
        self._redeliver = redeliver_probability
        self._roundtrip = roundtrip
        self._sink = sink or self.rows.extend
        self._queue: list[Addressed] = []

    # -- driving ------------------------------------------------------------

    def ingest(self, event: AnyEvent) -> None:
        """Queue an event for its processors (delivered by :meth:`deliver_all`)."""
        self.max_event_us = max(self.max_event_us, to_us(event.occurred_at))
        self._queue.extend(route_event(event))

    def deliver_all(self) -> None:
        """Deliver queued messages, and the messages they cause, until none is left."""
        rng = self._rng
        if rng is None:
            while self._queue:
                wave, self._queue = self._queue, []
                for addressed in wave:
                    self.deliver(addressed)
            return
        queue = self._queue
        while queue:
            i = rng.randrange(len(queue))
            queue[i], queue[-1] = queue[-1], queue[i]
            addressed = queue.pop()
            if self._redeliver and rng.random() < self._redeliver:
                queue.append(addressed)
            self.deliver(addressed)

    def deliver(self, addressed: Addressed) -> StepResult[Any]:
        """Apply one message to its key's state now; queue what it causes."""
        if self._roundtrip:
            addressed = Addressed.from_dict(json.loads(json.dumps(addressed.to_dict())))
        processor = self.processors[addressed.processor]
        table = self.states[addressed.processor]
        key = (addressed.brand_id, addressed.key)
        state = table.get(key)
        if state is not None and self._roundtrip:
            state = processor.state_from_dict(
                json.loads(json.dumps(processor.state_to_dict(state)))
            )
        result = processor.step(state, addressed.message, self.watermark_us)
        self.steps += 1
        self._store(table, key, result)
        return result

    def _store(
        self, table: dict[tuple[str, str], Any], key: tuple[str, str], result: StepResult[Any]
    ) -> None:
        if result.state is None:
            table.pop(key, None)
        else:
            table[key] = result.state
        if result.messages:
            self._queue.extend(result.messages)
        if result.rows:
            self._sink(result.rows)

    def advance_watermark(self, watermark_us: int) -> None:
        """Deliver everything pending, then move the watermark (µs) forward."""
        self.deliver_all()
        self.watermark_us = max(self.watermark_us, watermark_us)

    def expire_all(self) -> None:
        """Apply the current watermark to every key (drops old history everywhere)."""
        for name, processor in self.processors.items():
            table = self.states[name]
            for key, state in list(table.items()):
                self._store(table, key, processor.expire(state, self.watermark_us))
        self.deliver_all()

    def feed(self, events: Iterable[AnyEvent], batch_size: int = 1) -> None:
        """Ingest ``events`` in this order, ``batch_size`` at a time.

        After each batch, pending messages are delivered and the watermark moves
        to the largest event time ingested so far.
        """
        batch = 0
        for event in events:
            self.ingest(event)
            batch += 1
            if batch >= batch_size:
                self.advance_watermark(self.max_event_us)
                batch = 0
        self.advance_watermark(self.max_event_us)

    def finish(self) -> None:
        """End of input: deliver everything, then expire all history."""
        self.advance_watermark(END_OF_TIME)
        self.expire_all()

    # -- what ClickHouse would hold ----------------------------------------

    def loyalty(self) -> dict[tuple[str, str], LoyaltyRow]:
        """Latest loyalty snapshot per (brand, user)."""
        return latest_snapshots(self.rows, LoyaltyRow)

    def share_chains(self) -> dict[tuple[str, str], ShareChainRow]:
        """Latest share-chain snapshot per (brand, share id)."""
        return latest_snapshots(self.rows, ShareChainRow)

    def sharers(self) -> dict[tuple[str, str], SharerRow]:
        """Latest referrer snapshot per (brand, sharer)."""
        return latest_snapshots(self.rows, SharerRow)

    def net_credits(self) -> Counter[CreditRow]:
        """Credit outcomes with a non-zero net sign (revision and sign blanked)."""
        return net_outcomes(self.rows, CreditRow)

    def net_promotions(self) -> Counter[KocPromotionRow]:
        """KOC promotions with a non-zero net sign (revision and sign blanked)."""
        return net_outcomes(self.rows, KocPromotionRow)

    def late_events(self) -> list[LateEventRow]:
        """Every late-event row emitted."""
        return [r for r in self.rows if isinstance(r, LateEventRow)]
