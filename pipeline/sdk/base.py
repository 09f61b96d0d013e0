"""What every emitter does: buffer tracked events, send them in batches, flush, close.

Subclasses say how a batch travels (:mod:`pipeline.sdk.kafka_emitter`,
:mod:`pipeline.sdk.http_emitter`). The rules they share:

- ``track*`` validates the event at once (:class:`~pipeline.sdk.track.InvalidEvent`) and
  returns its ``event_id``; the event is then the emitter's to deliver.
- A full batch is sent; ``flush()`` sends the rest and blocks until every event is
  confirmed, retrying with backoff. What still cannot be delivered raises
  :class:`DeliveryError` and stays queued, so a later ``flush()`` tries again with the same
  event ids: nothing is dropped silently, and the copies a retry can make are absorbed by
  the pipeline's dedup.
- An emitter is safe to share between threads (one lock; calls are serialised).
"""

from __future__ import annotations

import datetime as dt
import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from decimal import Decimal
from types import TracebackType
from typing import Any

from pipeline.contract.events import (
    MAX_EVENTS_PER_ENVELOPE,
    AnyEvent,
)
from pipeline.errors import SiyuError
from pipeline.sdk.track import Properties, click_event, purchase_event, share_event


@dataclass(frozen=True, slots=True)
class Rejected:
    """An event the collector rejected: which, why (a dead-letter reason), details."""

    event_id: str | None
    reason: str
    detail: str


@dataclass(slots=True)
class FlushResult:
    """What one ``flush()`` settled: events confirmed, and events rejected by the collector."""

    delivered: int = 0
    rejected: list[Rejected] = field(default_factory=list)


class DeliveryError(SiyuError):
    """Events could not be delivered after every retry; they stay queued in the emitter."""

    def __init__(self, undelivered: int, cause: str) -> None:
        super().__init__(
            f"{undelivered} event(s) not delivered after retries ({cause}); they stay "
            "queued: flush() again later"
        )
        self.undelivered = undelivered
        self.cause = cause


class Emitter(ABC):
    """Buffers events and delivers them in batches; see the module docstring."""

    def __init__(self, brand_id: str | None, batch_size: int) -> None:
        if not 1 <= batch_size <= MAX_EVENTS_PER_ENVELOPE:
            raise ValueError(f"batch_size must be 1..{MAX_EVENTS_PER_ENVELOPE}, got {batch_size}")
        self.brand_id = brand_id
        self.batch_size = batch_size
        self._lock = threading.RLock()
        self._buffer: list[AnyEvent] = []
        self._result = FlushResult()
        self._closed = False

    # --- tracking -------------------------------------------------------------------------

    def track(self, event: AnyEvent) -> str:
        """Queue a ready event; returns its ``event_id``. Sends a batch when one is full."""
        with self._lock:
            if self._closed:
                raise RuntimeError("this emitter is closed")
            self._buffer.append(event)
            if len(self._buffer) >= self.batch_size:
                self._send_buffered()
            return event.event_id

    def track_click(
        self,
        user_id: str,
        channel: str,
        *,
        share_id: str | None = None,
        target_id: str | None = None,
        kol_id: str | None = None,
        campaign_id: str | None = None,
        properties: Properties | None = None,
        occurred_at: dt.datetime | None = None,
        event_id: str | None = None,
    ) -> str:
        """Track a click of ``user_id`` (random event id unless given)."""
        return self.track(
            click_event(
                self._brand(),
                user_id,
                channel,
                share_id=share_id,
                target_id=target_id,
                kol_id=kol_id,
                campaign_id=campaign_id,
                properties=properties,
                occurred_at=occurred_at,
                event_id=event_id,
            )
        )

    def track_share(
        self,
        user_id: str,
        channel: str,
        share_id: str,
        *,
        parent_share_id: str | None = None,
        target_id: str | None = None,
        kol_id: str | None = None,
        campaign_id: str | None = None,
        properties: Properties | None = None,
        occurred_at: dt.datetime | None = None,
        event_id: str | None = None,
    ) -> str:
        """Track a share (event id derived from ``share_id`` unless given)."""
        return self.track(
            share_event(
                self._brand(),
                user_id,
                channel,
                share_id,
                parent_share_id=parent_share_id,
                target_id=target_id,
                kol_id=kol_id,
                campaign_id=campaign_id,
                properties=properties,
                occurred_at=occurred_at,
                event_id=event_id,
            )
        )

    def track_purchase(
        self,
        user_id: str,
        channel: str,
        order_id: str,
        amount: Decimal | str | int,
        currency: str,
        *,
        share_id: str | None = None,
        kol_id: str | None = None,
        campaign_id: str | None = None,
        properties: Properties | None = None,
        occurred_at: dt.datetime | None = None,
        event_id: str | None = None,
    ) -> str:
        """Track a purchase (event id derived from ``order_id`` unless given)."""
        return self.track(
            purchase_event(
                self._brand(),
                user_id,
                channel,
                order_id,
                amount,
                currency,
                share_id=share_id,
                kol_id=kol_id,
                campaign_id=campaign_id,
                properties=properties,
                occurred_at=occurred_at,
                event_id=event_id,
            )
        )

    def _brand(self) -> str:
        if self.brand_id is None:
            raise ValueError("this emitter has no brand_id: pass brand_id=... or use track()")
        return self.brand_id

    # --- delivery -------------------------------------------------------------------------

    @property
    def pending(self) -> int:
        """Events tracked but not yet confirmed."""
        with self._lock:
            return len(self._buffer) + self._in_transit()

    def flush(self) -> FlushResult:
        """Send everything queued and block until it is confirmed (or raise
        :class:`DeliveryError`, keeping what failed queued). Returns what was settled since
        the last flush."""
        with self._lock:
            self._deliver_all()
            result, self._result = self._result, FlushResult()
            return result

    def discard(self) -> list[AnyEvent]:
        """Give up on the queued, unsent events and return them (after a
        :class:`DeliveryError`, when the caller keeps them elsewhere or reports them)."""
        with self._lock:
            events, self._buffer = self._buffer, []
            return events

    def close(self) -> None:
        """Flush, then release the connection. Raises :class:`DeliveryError` if events
        could not be delivered (the emitter is closed all the same)."""
        with self._lock:
            if self._closed:
                return
            try:
                self._deliver_all()
            finally:
                self._closed = True
                self._close_transport()

    def __enter__(self) -> Emitter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # --- for subclasses ---------------------------------------------------------------------

    @abstractmethod
    def _send_buffered(self) -> None:
        """Hand the buffered events to the transport (a full batch is waiting)."""

    @abstractmethod
    def _deliver_all(self) -> None:
        """Send everything and wait for confirmation, with retries; raise DeliveryError."""

    def _in_transit(self) -> int:
        """Events handed to the transport and not yet confirmed."""
        return 0

    @abstractmethod
    def _close_transport(self) -> None:
        """Release connections (after the last flush)."""

    def _settled(self, delivered: int, rejected: list[Any] | None = None) -> None:
        self._result.delivered += delivered
        if rejected:
            self._result.rejected.extend(rejected)
