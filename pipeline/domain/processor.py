"""The keyed processor protocol: what every processor of the domain core offers, and what
its step returns.

A processor owns one kind of key (:class:`~pipeline.domain.messages.ProcessorName`) and is a
step ``step(state, message, watermark_us) -> StepResult(state, messages, rows)`` over that
key's state; the caller (the in-memory :class:`~pipeline.domain.engine.Engine`, or the
worker's state agents) stores the state, delivers the messages and sinks the rows.
"""

from __future__ import annotations

from typing import Any, Generic, NamedTuple, Protocol, TypeVar

from pipeline.domain.messages import Addressed, ProcessorName
from pipeline.domain.rows import Row

StateT = TypeVar("StateT")


class StepResult(NamedTuple, Generic[StateT]):
    """What a step returns.

    ``state`` is the key's new state (None: delete the key), ``messages`` go to
    other keys, ``rows`` to the ClickHouse sink. The step may have mutated the
    state it was given: the caller must store ``state`` and not reuse the old one.

    ``changed`` is False only from ``expire``, when nothing but the state's own watermark
    moved: the state as stored before, advanced to the same watermark, equals this one, so
    the caller need not write it (a sweep of a quiet key then costs no changelog record).
    """

    state: StateT | None
    messages: list[Addressed]
    rows: list[Row]
    changed: bool = True


class KeyedProcessor(Protocol):
    """What every processor offers (states are opaque to the caller)."""

    name: ProcessorName

    def step(self, state: Any, message: Any, watermark_us: int) -> StepResult[Any]:
        """Apply one message to one key's state (None: a new key)."""

    def expire(self, state: Any, watermark_us: int) -> StepResult[Any]:
        """Advance the watermark of one key's state without a message."""

    def state_to_dict(self, state: Any) -> dict[str, Any]:
        """JSON-safe form of a state."""

    def state_from_dict(self, d: dict[str, Any]) -> Any:
        """Inverse of ``state_to_dict``."""
