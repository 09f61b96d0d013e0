"""The HTTP emitter: events to the collector (``POST /v1/events``) with the brand's key.

Batches are posted synchronously (standard library only: ``urllib``). Network errors, 429
and 5xx are retried with backoff, waiting what the collector's ``Retry-After`` asks; the
same body is resent, so the event ids do not change. Any other 4xx means the request
itself is wrong (bad key, another brand's events, too large) and is not retried: it
raises :class:`RequestRefused` carrying the events. Events the collector rejects one by one
are in ``flush().rejected`` with the reason.
"""

from __future__ import annotations

import http.client
import logging
import time
import urllib.error
import urllib.request
from collections.abc import Callable

from pydantic import ValidationError

from pipeline.contract.envelopes import Packed, pack_envelopes
from pipeline.contract.events import AnyEvent
from pipeline.contract.http import ErrorResponse, IngestResponse
from pipeline.errors import SiyuError
from pipeline.sdk.base import DeliveryError, Emitter, Rejected
from pipeline.sdk.retry import Backoff, parse_retry_after

log = logging.getLogger(__name__)

EVENTS_PATH = "/v1/events"


class RequestRefused(SiyuError):
    """The collector refused a request as a whole (4xx other than 429); not retried.

    ``events`` are the events of that request, no longer queued in the emitter.
    """

    def __init__(self, status: int, error: str, message: str, events: list[AnyEvent]) -> None:
        super().__init__(f"collector refused {len(events)} event(s): {status} {error}: {message}")
        self.status = status
        self.error = error
        self.message = message
        self.events = events


class _Retryable(Exception):
    def __init__(self, what: str, retry_after_s: float | None = None) -> None:
        super().__init__(what)
        self.retry_after_s = retry_after_s


class HttpEmitter(Emitter):
    """Emit events to the siyu collector at ``url`` with ``api_key``.

    ``url`` defaults to the local collector of the siyu settings. ``max_body_bytes`` should
    not exceed the collector's ``SIYU_COLLECTOR_MAX_BODY_BYTES``: batches are split to fit.
    """

    def __init__(
        self,
        api_key: str,
        brand_id: str | None = None,
        *,
        url: str | None = None,
        batch_size: int = 500,
        max_body_bytes: int = 1_048_576,
        timeout_s: float = 15.0,
        max_attempts: int = 8,
        backoff: Backoff | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        super().__init__(brand_id, batch_size)
        if url is None:
            from pipeline.settings import load_settings

            s = load_settings()
            url = f"http://{s.collector_host}:{s.collector_port}"
        self.url = url.rstrip("/") + EVENTS_PATH
        self._api_key = api_key
        self.max_body_bytes = max_body_bytes
        self.timeout_s = timeout_s
        self.max_attempts = max(1, max_attempts)
        self.backoff = backoff or Backoff()
        self._sleep = sleep

    def _send_buffered(self) -> None:
        self._deliver_all()

    def _deliver_all(self) -> None:
        while self._buffer:
            # One body: at most batch_size events and max_body_bytes (minus some slack).
            packed = pack_envelopes(
                self._buffer[: self.batch_size], 1, self.batch_size, self.max_body_bytes - 64
            )[0]
            n = len(packed.events)
            try:
                self._post(packed)
            except RequestRefused as err:
                events = self._buffer[:n]
                del self._buffer[:n]  # not retried: the error carries the events
                raise RequestRefused(err.status, err.error, err.message, events) from None
            del self._buffer[:n]

    def _post(self, packed: Packed) -> None:
        attempt = 1
        while True:
            try:
                self._settle(self._request(packed.value), packed)
                return
            except _Retryable as err:
                if attempt >= self.max_attempts:
                    raise DeliveryError(len(self._buffer), str(err)) from None
                delay = self.backoff.delay(attempt, err.retry_after_s)
                log.warning(
                    "collector: %s; retrying in %.1fs (attempt %d/%d)",
                    err,
                    delay,
                    attempt + 1,
                    self.max_attempts,
                )
                self._sleep(delay)
                attempt += 1

    def _close_transport(self) -> None:
        """Nothing to release: every request opens and closes its own connection."""

    def _request(self, body: bytes) -> bytes:
        """POST ``body``; the 200 response body, or :class:`_Retryable`/
        :class:`RequestRefused`."""
        req = urllib.request.Request(
            self.url,
            data=body,
            method="POST",
            headers={
                "Authorization": f"Bearer {self._api_key}",
                "Content-Type": "application/json",
                "User-Agent": "siyu-sdk",
            },
        )
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                data: bytes = resp.read()
                return data
        except urllib.error.HTTPError as err:
            status, headers, payload = err.code, err.headers, err.read()
        except (urllib.error.URLError, http.client.HTTPException, OSError) as err:
            reason = getattr(err, "reason", err)
            raise _Retryable(f"{self.url} unreachable ({reason})") from None
        error, message = _error_of(payload)
        if status == 429 or status >= 500:
            raise _Retryable(
                f"{status} {error}: {message}", parse_retry_after(headers.get("Retry-After"))
            )
        raise RequestRefused(status, error, message, [])

    def _settle(self, body: bytes, packed: Packed) -> None:
        try:
            answer = IngestResponse.model_validate_json(body)
        except ValidationError as err:
            raise _Retryable(
                f"unreadable answer from the collector ({err.error_count()} errors)"
            ) from None
        rejected = [
            Rejected(r.event_id, str(r.reason), r.detail or "")
            for r in answer.results
            if r.status == "rejected"
        ]
        for r in rejected:
            log.warning("collector rejected event %s: %s: %s", r.event_id, r.reason, r.detail)
        self._settled(answer.accepted, rejected)


def _error_of(payload: bytes) -> tuple[str, str]:
    try:
        e = ErrorResponse.model_validate_json(payload)
    except ValidationError:
        return "http_error", payload[:200].decode("utf-8", "replace")
    return str(e.error), e.message
