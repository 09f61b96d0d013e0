"""The collector's aiohttp application: ``POST /v1/events``, ``/healthz``, ``/readyz``,
``/metrics``.

A request to ``/v1/events`` meets, in order: the key check (401, before the body is read),
the size check on Content-Length (413), the in-flight limits (429, or 503 while Kafka is
known to be down), the body read with its size limit (413), :func:`take_in` (400, 403, 413),
and Kafka (503 when it does not confirm within ``SIYU_COLLECTOR_SEND_TIMEOUT_S``). Only a
200 says events were accepted, and it comes after Kafka confirmed every one of them.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from aiokafka.errors import KafkaError
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel

from pipeline.collector.intake import Intake, Refusal, take_in
from pipeline.collector.keys import KeyRing, bearer_token
from pipeline.collector.limits import Gate, Ticket
from pipeline.collector.metrics import CollectorMetrics
from pipeline.collector.publish import KafkaUnavailable, Publisher
from pipeline.contract.events import utc_now
from pipeline.contract.http import (
    ErrorCode,
    ErrorResponse,
    Health,
    IngestResponse,
    Readiness,
)
from pipeline.settings import Settings

log = logging.getLogger(__name__)

EVENTS_PATH = "/v1/events"
_READ_CHUNK = 65536

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def model_response(
    model: BaseModel, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    """``model`` as a JSON response (null fields left out)."""
    return web.Response(
        body=model.model_dump_json(exclude_none=True).encode(),
        status=status,
        content_type="application/json",
        headers=headers,
    )


class Collector:
    """One collector: settings, keys, a Kafka publisher, limits and metrics."""

    def __init__(
        self,
        settings: Settings,
        keys: KeyRing,
        publisher: Publisher | None = None,
        clock: Callable[[], dt.datetime] = utc_now,
    ) -> None:
        self.settings = settings
        self.keys = keys
        self.publisher = publisher or Publisher(settings)
        self.clock = clock
        self.gate = Gate(
            settings.collector_max_inflight_requests, settings.collector_max_inflight_bytes
        )
        self.metrics = CollectorMetrics()
        #: Set when Kafka last failed a request, cleared by the next confirmed one: while it
        #: is set, a full gate means "Kafka is down" (503), otherwise "busy" (429).
        self.kafka_down = False
        self._settling: set[asyncio.Future[Any]] = set()
        for brand in keys.brands:  # every brand visible in /metrics from the start
            self.metrics.accepted.labels(brand)

    def app(self) -> web.Application:
        """The aiohttp application; the Kafka producer starts and stops with it."""
        app = web.Application(middlewares=[self._count_and_shape_errors])
        app.router.add_post(EVENTS_PATH, self.post_events, name="events")
        app.router.add_get("/healthz", self.healthz, name="healthz")
        app.router.add_get("/readyz", self.readyz, name="readyz")
        app.router.add_get("/metrics", self.metrics_page, name="metrics")
        app.on_startup.append(self._start)
        app.on_cleanup.append(self._stop)
        return app

    async def _start(self, app: web.Application) -> None:
        await self.publisher.start()

    async def _stop(self, app: web.Application) -> None:
        await self.publisher.stop()
        if self._settling:
            await asyncio.wait(self._settling, timeout=self.settings.collector_send_timeout_s)

    # --- routes ---------------------------------------------------------------------------

    async def healthz(self, request: web.Request) -> web.Response:
        return model_response(Health(status="ok"))

    async def readyz(self, request: web.Request) -> web.Response:
        ready, detail = await self.publisher.readiness()
        return model_response(Readiness(ready=ready, detail=detail), 200 if ready else 503)

    async def metrics_page(self, request: web.Request) -> web.Response:
        self.metrics.inflight_requests.set(self.gate.requests)
        self.metrics.inflight_bytes.set(self.gate.bytes)
        return web.Response(
            body=generate_latest(self.metrics.registry),
            headers={"Content-Type": CONTENT_TYPE_LATEST},
        )

    async def post_events(self, request: web.Request) -> web.Response:
        start = time.perf_counter()
        try:
            return await self._post_events(request)
        finally:
            self.metrics.latency.observe(time.perf_counter() - start)

    async def _post_events(self, request: web.Request) -> web.Response:
        s = self.settings
        brand = self.keys.brand_for(bearer_token(request.headers.get("Authorization")))
        if brand is None:
            return _error(
                401,
                ErrorCode.UNAUTHORIZED,
                "missing or unknown API key: send the header `Authorization: Bearer <key>` "
                "with the key issued for your brand",
                {"WWW-Authenticate": 'Bearer realm="siyu"'},
            )
        length = request.content_length
        if length is not None and length > s.collector_max_body_bytes:
            return self._too_large(length)
        ticket = self.gate.try_acquire(length if length is not None else s.collector_max_body_bytes)
        if ticket is None:
            return self._shed()
        futures: list[asyncio.Future[Any]] = []
        try:
            body = await self._read_body(request)
            if body is None:
                return self._too_large(None)
            ticket.shrink(len(body))
            received_at = self.clock()
            intake = take_in(body, brand, received_at, s.collector_max_events, s.max_event_ahead_s)
            if isinstance(intake, Refusal):
                return _error(intake.status, intake.error, intake.message)
            request_id = secrets.randbits(63)
            failure = await self._publish(brand, request_id, received_at, intake, futures)
            if failure is not None:
                return self._unavailable(failure)
            self.kafka_down = False
            self._count_events(brand, intake)
            return model_response(
                IngestResponse(
                    request_id=str(request_id),
                    received_at=received_at,
                    accepted=len(intake.accepted),
                    rejected=len(intake.rejects),
                    results=intake.results,
                )
            )
        finally:
            self._release_when_settled(ticket, futures)

    # --- steps ----------------------------------------------------------------------------

    async def _read_body(self, request: web.Request) -> bytes | None:
        """The body, or None once it exceeds the limit (the rest is not read)."""
        limit = self.settings.collector_max_body_bytes
        chunks: list[bytes] = []
        size = 0
        while chunk := await request.content.read(_READ_CHUNK):
            size += len(chunk)
            if size > limit:
                return None
            chunks.append(chunk)
        return b"".join(chunks)

    async def _publish(
        self,
        brand: str,
        request_id: int,
        received_at: dt.datetime,
        intake: Intake,
        futures: list[asyncio.Future[Any]],
    ) -> KafkaUnavailable | None:
        """Send and wait for Kafka's confirmation of every message, or say why not."""
        timeout = self.settings.collector_send_timeout_s
        received_ms = int(received_at.timestamp() * 1000)
        try:
            async with asyncio.timeout(timeout):
                await self.publisher.send(
                    brand, request_id, received_ms, intake.accepted, intake.rejects, futures
                )
                if futures:
                    # asyncio.wait never cancels the futures: on timeout the messages stay
                    # accounted for in the gate until Kafka settles them.
                    await asyncio.wait(futures)
        except TimeoutError:
            return KafkaUnavailable("timeout", f"Kafka did not confirm within {timeout:g}s")
        except KafkaUnavailable as err:
            return err
        except KafkaError as err:
            return KafkaUnavailable("error", f"{type(err).__name__}: {err}")
        for fut in futures:
            failed = fut.exception()
            if failed is not None:
                return KafkaUnavailable("error", f"{type(failed).__name__}: {failed}")
        return None

    def _release_when_settled(self, ticket: Ticket, futures: list[asyncio.Future[Any]]) -> None:
        """Give the ticket back once Kafka settled every message of the request."""
        pending = [f for f in futures if not f.done()]
        if not pending:
            ticket.release()
            return
        waiter = asyncio.ensure_future(asyncio.wait(pending))
        self._settling.add(waiter)

        def done(w: asyncio.Future[Any]) -> None:
            self._settling.discard(w)
            ticket.release()
            for f in pending:  # mark exceptions retrieved: they were reported as 503
                if not f.cancelled():
                    f.exception()

        waiter.add_done_callback(done)

    def _count_events(self, brand: str, intake: Intake) -> None:
        self.metrics.batch_events.observe(len(intake.results))
        if intake.accepted:
            self.metrics.accepted.labels(brand).inc(len(intake.accepted))
        for reject in intake.rejects:
            self.metrics.rejected.labels(brand, str(reject.reason)).inc()

    # --- refusals -------------------------------------------------------------------------

    def _too_large(self, length: int | None) -> web.Response:
        limit = self.settings.collector_max_body_bytes
        size = f"{length} bytes" if length is not None else "the body"
        return _error(
            413,
            ErrorCode.BODY_TOO_LARGE,
            f"{size} is over the limit of {limit} bytes per request: send smaller batches",
        )

    def _shed(self) -> web.Response:
        retry = self.settings.collector_retry_after_s
        if self.kafka_down:
            return _error(
                503,
                ErrorCode.KAFKA_UNAVAILABLE,
                "Kafka is not confirming writes and the collector is at its limit of "
                f"requests in flight; none was accepted, retry after {retry}s",
                retry_after=retry,
            )
        return _error(
            429,
            ErrorCode.BUSY,
            f"the collector is at its limit of requests in flight (Kafka is slow); "
            f"retry after {retry}s",
            retry_after=retry,
        )

    def _unavailable(self, failure: KafkaUnavailable) -> web.Response:
        self.kafka_down = True
        self.metrics.kafka_failures.labels(failure.kind).inc()
        retry = self.settings.collector_retry_after_s
        log.warning("kafka did not take a request: %s", failure.detail)
        return _error(
            503,
            ErrorCode.KAFKA_UNAVAILABLE,
            f"Kafka did not confirm the events ({failure.detail}); none was accepted, "
            f"retry the same request after {retry}s",
            retry_after=retry,
        )

    @web.middleware
    async def _count_and_shape_errors(self, request: web.Request, handler: Handler) -> Any:
        """Count every answer by status; give aiohttp's own 404/405 a JSON body."""
        try:
            response = await handler(request)
        except web.HTTPNotFound:
            response = _error(404, ErrorCode.NOT_FOUND, f"no such path; POST {EVENTS_PATH}")
        except web.HTTPMethodNotAllowed as err:
            allowed = ", ".join(sorted(err.allowed_methods))
            response = _error(
                405,
                ErrorCode.METHOD_NOT_ALLOWED,
                f"{request.method} is not allowed here; use {allowed}",
                {"Allow": allowed},
            )
        self.metrics.requests.labels(str(response.status)).inc()
        return response


def _error(
    status: int,
    error: ErrorCode,
    message: str,
    headers: dict[str, str] | None = None,
    retry_after: int | None = None,
) -> web.Response:
    headers = dict(headers or {})
    if retry_after is not None:
        headers["Retry-After"] = str(retry_after)
    return model_response(
        ErrorResponse(error=error, message=message, retry_after_s=retry_after), status, headers
    )
