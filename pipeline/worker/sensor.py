"""What the worker's runtime reports, as facts: the sensor interface.

The agents call one method per batch with what happened, in typed form (events, rows, dead
letters), and never compute a metric themselves; :class:`Sensor` itself does nothing, so a
test or an embedding can run the topology without Prometheus, or count what it needs by
overriding a method. :class:`pipeline.metrics.PrometheusSensor` is the worker's.
(After Faust's ``faust.sensors.base``, whose ``on_message_in`` and friends do the same
for Faust's own runtime.)
"""

from __future__ import annotations

from collections.abc import Sequence

from pipeline.contract.deadletter import DeadLetter
from pipeline.contract.events import AnyEvent
from pipeline.domain import Row


class Sensor:
    """Receives the worker's facts; every method does nothing here."""

    def on_ingest(
        self,
        messages: int,
        accepted: Sequence[AnyEvent],
        dead_letters: Sequence[DeadLetter],
        seconds: float,
    ) -> None:
        """An ingest batch: ``messages`` read from the events topic, the events ``accepted``
        (valid; duplicates included) and the ``dead_letters`` of the rejected, in
        ``seconds`` until its output was confirmed."""

    def on_events_applied(self, events: Sequence[AnyEvent], duplicates: Sequence[AnyEvent]) -> None:
        """The user processor counted ``events`` into user state, and ignored ``duplicates``
        (an event id it had seen before). Every event reaches it once per delivery."""

    def on_state_batch(
        self,
        processor: str,
        rows: Sequence[Row],
        dead_letters: Sequence[DeadLetter],
        seconds: float,
    ) -> None:
        """A state agent's batch (or sweep chunk) of ``processor`` emitted ``rows`` and
        dead-lettered ``dead_letters``, in ``seconds`` until its output was confirmed."""

    def on_state_cache(self, processor: str, lookups: int, misses: int, evictions: int) -> None:
        """A batch of ``processor`` looked up ``lookups`` keys' states, ``misses`` of them
        not in the state cache; ``evictions`` states were dropped to keep its bound."""

    def on_loop_lag(self, seconds: float) -> None:
        """The event loop woke ``seconds`` later than asked."""
