"""The HTTP emitter's retry rules against a real local HTTP server that answers on script.

The collector itself is exercised in tests/integration/test_collector.py; this server
plays the collector's answers (503 with Retry-After, 400, per-event rejects) on demand.
"""

from __future__ import annotations

import datetime as dt
import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import orjson
import pytest

from pipeline.contract.events import RejectReason
from pipeline.contract.http import ErrorCode, ErrorResponse, EventResult, IngestResponse
from pipeline.sdk import DeliveryError, HttpEmitter, RequestRefused
from pipeline.sdk.retry import Backoff

Answer = tuple[int, dict[str, str], bytes | None]  # None body: accept every event


class _Scripted(ThreadingHTTPServer):
    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.script: list[Answer] = []
        self.requests: list[tuple[dict[str, str], bytes]] = []


class _Handler(BaseHTTPRequestHandler):
    server: _Scripted

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.requests.append((dict(self.headers), body))
        status, headers, payload = (
            self.server.script.pop(0)
            if self.server.script
            else (
                200,
                {},
                None,
            )
        )
        if payload is None:
            events = orjson.loads(body)["events"]
            payload = (
                IngestResponse(
                    request_id="1",
                    received_at=dt.datetime.now(dt.UTC),
                    accepted=len(events),
                    rejected=0,
                    results=[
                        EventResult(index=i, event_id=e["event_id"], status="accepted")
                        for i, e in enumerate(events)
                    ],
                )
                .model_dump_json()
                .encode()
            )
        self.send_response(status)
        for k, v in {"Content-Type": "application/json", **headers}.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[_Scripted]:
    srv = _Scripted()
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def _emitter(url: str, sleeps: list[float], **kw: object) -> HttpEmitter:
    return HttpEmitter(
        "siyu_k3y",
        "acme",
        url=url,
        sleep=sleeps.append,
        backoff=Backoff(initial_s=1, maximum_s=8),
        **kw,  # type: ignore[arg-type]
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _url(srv: _Scripted) -> str:
    return f"http://127.0.0.1:{srv.server_address[1]}"


def _error(status: int, code: ErrorCode, retry: int | None = None) -> Answer:
    body = ErrorResponse(error=code, message="scripted", retry_after_s=retry)
    headers = {"Retry-After": str(retry)} if retry is not None else {}
    return status, headers, body.model_dump_json().encode()


def test_503_is_retried_after_retry_after_with_the_same_body(server: _Scripted) -> None:
    server.script = [_error(503, ErrorCode.KAFKA_UNAVAILABLE, 3), _error(429, ErrorCode.BUSY)]
    sleeps: list[float] = []
    em = _emitter(_url(server), sleeps)
    ids = [em.track_purchase(f"u{i}", "app", f"o{i}", "1.00", "CNY") for i in range(4)]
    assert em.flush().delivered == 4
    bodies = [b for _, b in server.requests]
    assert len(bodies) == 3 and bodies[0] == bodies[1] == bodies[2]
    assert [e["event_id"] for e in orjson.loads(bodies[0])["events"]] == ids
    assert sleeps[0] == 3.0  # Retry-After, not the backoff
    assert 1 <= sleeps[1] <= 2  # 429 without Retry-After: backoff of attempt 2
    assert server.requests[0][0]["Authorization"] == "Bearer siyu_k3y"


def test_other_4xx_are_not_retried_and_carry_the_events(server: _Scripted) -> None:
    server.script = [_error(403, ErrorCode.WRONG_BRAND)]
    sleeps: list[float] = []
    em = _emitter(_url(server), sleeps)
    em.track_click("u1", "app")
    with pytest.raises(RequestRefused) as err:
        em.flush()
    assert (err.value.status, err.value.error) == (403, "wrong_brand")
    assert len(err.value.events) == 1 and em.pending == 0
    assert len(server.requests) == 1 and sleeps == []


def test_per_event_rejects_are_reported(server: _Scripted) -> None:
    answer = IngestResponse(
        request_id="7",
        received_at=dt.datetime.now(dt.UTC),
        accepted=1,
        rejected=1,
        results=[
            EventResult(index=0, event_id="a", status="accepted"),
            EventResult(
                index=1,
                event_id="b",
                status="rejected",
                reason=RejectReason.SCHEMA_VIOLATION,
                detail="amount: bad",
            ),
        ],
    )
    server.script = [(200, {}, answer.model_dump_json().encode())]
    em = _emitter(_url(server), [])
    em.track_click("u1", "app", event_id="a")
    em.track_click("u1", "app", event_id="b")
    result = em.flush()
    assert result.delivered == 1
    assert [(r.event_id, r.reason, r.detail) for r in result.rejected] == [
        ("b", "schema_violation", "amount: bad")
    ]


def test_batches_are_split_by_count_and_bytes(server: _Scripted) -> None:
    em = _emitter(_url(server), [], batch_size=5, max_body_bytes=2048)
    for i in range(23):
        em.track_click(f"u{i}", "app", properties={"pad": "x" * 200})
    assert em.flush().delivered == 23
    sizes = [len(json.loads(b)["events"]) for _, b in server.requests]
    assert sum(sizes) == 23 and max(sizes) <= 5
    assert all(len(b) <= 2048 for _, b in server.requests)


def test_an_unreachable_collector_raises_after_the_attempts_and_keeps_events() -> None:
    sleeps: list[float] = []
    em = _emitter(f"http://127.0.0.1:{_free_port()}", sleeps, max_attempts=3)
    em.track_click("u1", "app")
    with pytest.raises(DeliveryError, match="unreachable"):
        em.flush()
    assert len(sleeps) == 2 and em.pending == 1
    assert len(em.discard()) == 1 and em.pending == 0
