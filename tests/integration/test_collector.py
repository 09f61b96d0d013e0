"""The HTTP collector against the real Kafka: a real ``siyu collector`` process, real requests,
and a real consumer that checks what reached the topics (and that nothing else did).

Every answer is also checked against the OpenAPI description: its status must be
documented for the path and its body must parse as the documented model.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pipeline.collector.keys import hash_key, new_key
from pipeline.collector.openapi import openapi_document
from pipeline.contract.deadletter import H_BRAND, H_INDEX, H_OFFSET, H_REASON, H_TOPIC
from pipeline.contract.http import ErrorResponse, IngestResponse
from pipeline.sdk import HttpEmitter
from tests.integration import stack
from tests.integration.collector_env import (
    Answer,
    CollectorProcess,
    end_offsets,
    event_ids,
    get,
    kafka_stopped,
    post,
    post_chunked,
    read_topic,
)
from tests.integration.pipeline_env import REPO, wait_for
from tests.unit.contract.test_events import purchase

MAX_BODY = 65_536
MAX_EVENTS = 100
MAX_INFLIGHT = 2
DOCUMENTED = openapi_document()["paths"]["/v1/events"]["post"]["responses"]


@dataclass
class Running:
    proc: CollectorProcess
    bootstrap: str
    events_topic: str
    dead_topic: str
    key_acme: str
    key_bolt: str
    env: dict[str, str]

    @property
    def events_url(self) -> str:
        return self.proc.url + "/v1/events"

    def send(self, body: bytes | Any, key: str | None, **headers: str) -> Answer:
        return checked(post(self.events_url, body, key, headers))

    def offsets(self) -> dict[Any, int]:
        return end_offsets(self.bootstrap, [self.events_topic, self.dead_topic])


def checked(answer: Answer) -> Answer:
    """The answer, after checking it against the OpenAPI description."""
    assert str(answer.status) in DOCUMENTED, f"undocumented status {answer.status}"
    model = IngestResponse if answer.status == 200 else ErrorResponse
    model.model_validate(answer.body)
    if answer.status in (429, 503):
        assert int(answer.headers["Retry-After"]) >= 1
    return answer


@pytest.fixture(scope="module")
def collector(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    name = stack.unique_name("collector")
    key_acme, key_bolt = new_key(), new_key()
    env = {
        "SIYU_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "SIYU_TOPIC_EVENTS": f"{name}.events",
        "SIYU_TOPIC_DEAD_LETTERS": f"{name}.dead-letters",
        "SIYU_COLLECTOR_KEYS": json.dumps({hash_key(key_acme): "acme", hash_key(key_bolt): "bolt"}),
        "SIYU_COLLECTOR_MAX_BODY_BYTES": str(MAX_BODY),
        "SIYU_COLLECTOR_MAX_EVENTS": str(MAX_EVENTS),
        "SIYU_COLLECTOR_SEND_TIMEOUT_S": "2",
        "SIYU_COLLECTOR_RETRY_AFTER_S": "1",
        "SIYU_COLLECTOR_MAX_INFLIGHT_REQUESTS": str(MAX_INFLIGHT),
    }
    proc = CollectorProcess(env, tmp_path_factory.mktemp("collector") / "collector.log")
    try:
        proc.wait_ready()
        yield Running(
            proc,
            kafka_bootstrap,
            env["SIYU_TOPIC_EVENTS"],
            env["SIYU_TOPIC_DEAD_LETTERS"],
            key_acme,
            key_bolt,
            env,
        )
    finally:
        assert proc.stop() == 0, proc.log_path.read_text()[-3000:]
        if stack.is_running("kafka"):
            stack.delete_topics([env["SIYU_TOPIC_EVENTS"], env["SIYU_TOPIC_DEAD_LETTERS"]])


def _acme(tag: str, i: int, **over: Any) -> dict[str, Any]:
    return purchase(
        brand_id="acme",
        event_id=f"{tag}-{i}",
        user_id=f"u{i % 3}",
        order_id=f"{tag}-o{i}",
        **over,
    )


def _tag() -> str:
    return uuid.uuid4().hex[:8]


def _ids_in_topic(c: Running, tag: str) -> list[str]:
    return [i for i in event_ids(read_topic(c.bootstrap, c.events_topic)) if i.startswith(tag)]


def test_missing_or_wrong_key_is_401_and_nothing_reaches_kafka(collector: Running) -> None:
    c = collector
    body = {"events": [_acme(_tag(), i) for i in range(3)]}
    before = c.offsets()
    for key, extra in [
        (None, {}),
        (new_key(), {}),
        (hash_key(c.key_acme), {}),  # the configured hash is not a key
        (None, {"Authorization": f"Basic {c.key_acme}"}),
    ]:
        answer = c.send(body, key, **extra)
        assert answer.status == 401, answer
        assert answer.body["error"] == "unauthorized"
        assert "Authorization: Bearer" in answer.body["message"]
        assert answer.headers["WWW-Authenticate"].startswith("Bearer")
    assert c.offsets() == before


def test_a_brand_key_cannot_write_another_brands_events(collector: Running) -> None:
    c = collector
    tag = _tag()
    bolt_event = {**_acme(tag, 1), "brand_id": "bolt"}
    before = c.offsets()
    for body in (bolt_event, {"events": [_acme(tag, 0), bolt_event]}):
        answer = c.send(body, c.key_acme)
        assert answer.status == 403, answer
        assert answer.body["error"] == "wrong_brand"
        assert "'bolt'" in answer.body["message"] and "'acme'" in answer.body["message"]
    assert c.offsets() == before
    # The same event with bolt's own key is accepted: the refusal was about the key.
    answer = c.send(bolt_event, c.key_bolt)
    assert (answer.status, answer.body["accepted"]) == (200, 1)
    assert _ids_in_topic(c, tag) == [f"{tag}-1"]


def test_oversized_bodies_and_malformed_json_get_clear_4xx(collector: Running) -> None:
    c = collector
    tag = _tag()
    before = c.offsets()
    padded = _acme(tag, 0, properties={f"k{i}": "x" * 500 for i in range(32)})
    big = json.dumps({"events": [padded] * 5}).encode()
    assert len(big) > MAX_BODY
    answer = c.send(big, c.key_acme)
    assert (answer.status, answer.body["error"]) == (413, "body_too_large")
    assert f"limit of {MAX_BODY} bytes" in answer.body["message"]

    # Without Content-Length the limit holds while reading.
    chunked = checked(
        post_chunked(
            c.events_url, [big[i : i + 8192] for i in range(0, len(big), 8192)], c.key_acme
        )
    )
    assert (chunked.status, chunked.body["error"]) == (413, "body_too_large")

    many = {"events": [_acme(tag, i) for i in range(MAX_EVENTS + 1)]}
    answer = c.send(many, c.key_acme)
    assert (answer.status, answer.body["error"]) == (413, "too_many_events")
    assert f"at most {MAX_EVENTS}" in answer.body["message"]

    answer = c.send(b'{"events": [{"event_id": ', c.key_acme)
    assert (answer.status, answer.body["error"]) == (400, "malformed_json")
    assert "not valid JSON" in answer.body["message"]

    answer = c.send([_acme(tag, 1)], c.key_acme)  # a bare array is not an envelope
    assert (answer.status, answer.body["error"]) == (400, "malformed_body")
    assert '{"events": [event, ...]}' in answer.body["message"]
    assert c.offsets() == before


def test_a_batch_accepts_exactly_its_valid_events_and_dead_letters_the_rest(
    collector: Running,
) -> None:
    c = collector
    tag = _tag()
    valid = [_acme(tag, i) for i in range(7)]
    bad_amount = _acme(tag, 100, amount="-5")
    bad_type = _acme(tag, 101, type="refund")
    no_user = _acme(tag, 102)
    del no_user["user_id"]
    ahead = _acme(tag, 103, occurred_at="2099-01-01T00:00:00Z")  # a sender's clock far ahead
    body = {"events": [valid[0], bad_amount, *valid[1:4], bad_type, *valid[4:], no_user, ahead]}
    dead_before = len(read_topic(c.bootstrap, c.dead_topic))

    answer = c.send(body, c.key_acme)
    assert answer.status == 200, answer
    assert (answer.body["accepted"], answer.body["rejected"]) == (7, 4)
    rejected = [
        (r["index"], r["event_id"], r["reason"])
        for r in answer.body["results"]
        if r["status"] == "rejected"
    ]
    assert rejected == [
        (1, f"{tag}-100", "schema_violation"),
        (5, f"{tag}-101", "unknown_type"),
        (9, f"{tag}-102", "schema_violation"),
        (10, f"{tag}-103", "occurred_in_future"),
    ]
    assert "amount" in answer.body["results"][1]["detail"]

    # Exactly the valid events reached the events topic, once each, stamped.
    records = read_topic(c.bootstrap, c.events_topic)
    landed = [
        e for r in records for e in json.loads(r.value)["events"] if e["event_id"].startswith(tag)
    ]
    assert sorted(e["event_id"] for e in landed) == sorted(e["event_id"] for e in valid)
    assert {e["received_at"].replace("+00:00", "Z") for e in landed} == {answer.body["received_at"]}

    # The four rejects are dead letters with their own bytes, the reason and the request.
    letters = read_topic(c.bootstrap, c.dead_topic)[dead_before:]
    got = sorted(
        (
            json.loads(m.value)["event_id"],
            dict(m.headers)[H_REASON].decode(),
            int(dict(m.headers)[H_INDEX]),
        )
        for m in letters
    )
    assert got == [
        (f"{tag}-100", "schema_violation", 1),
        (f"{tag}-101", "unknown_type", 5),
        (f"{tag}-102", "schema_violation", 9),
        (f"{tag}-103", "occurred_in_future", 10),
    ]
    for m in letters:
        h = dict(m.headers)
        assert h[H_TOPIC] == b"collector"
        assert h[H_OFFSET].decode() == answer.body["request_id"]
        assert h[H_BRAND] == b"acme"


def test_the_http_emitter_delivers_through_the_collector(collector: Running) -> None:
    c = collector
    tag = _tag()
    with HttpEmitter(c.key_acme, "acme", url=c.proc.url, batch_size=8) as em:
        ids = [em.track_click(f"u{i}", "app", event_id=f"{tag}-c{i}") for i in range(10)]
        ids += [em.track_share(f"u{i}", "wechat_group", f"{tag}-s{i}") for i in range(5)]
        ids += [em.track_purchase(f"u{i}", "app", f"{tag}-o{i}", "59.00", "CNY") for i in range(5)]
        result = em.flush()
    assert (result.delivered, result.rejected) == (20, [])
    topic_ids = [i for i in event_ids(read_topic(c.bootstrap, c.events_topic)) if i in set(ids)]
    assert sorted(topic_ids) == sorted(ids)


def test_siyu_emit_via_http_reports_the_bad_line(collector: Running, tmp_path: Path) -> None:
    c = collector
    tag = _tag()
    lines = [json.dumps(_acme(tag, i)) for i in range(4)]
    lines.insert(2, '{"event_id": "broken"')
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join(lines) + "\n")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipeline.cli",
            "emit",
            str(path),
            "--via",
            "http",
            "--url",
            c.proc.url,
            "--quiet",
        ],
        env={**os.environ, **c.env, "SIYU_API_KEY": c.key_acme},
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
        check=False,
    )
    assert done.returncode == 1, done
    assert "sent 4 event(s) via http" in done.stdout
    assert "1 bad line(s) not sent" in done.stderr and "line 3: invalid_json" in done.stderr
    assert sorted(_ids_in_topic(c, tag)) == [f"{tag}-{i}" for i in range(4)]


def test_metrics_count_requests_events_and_rejects_by_brand(collector: Running) -> None:
    c = collector
    tag = _tag()

    def sample(name: str) -> float:
        text = get(c.proc.url + "/metrics").body
        for line in str(text).splitlines():
            if line.startswith(name + " "):
                return float(line.split()[-1])
        return 0.0

    accepted = 'siyu_collector_events_accepted_total{brand="acme"}'
    rejected = 'siyu_collector_events_rejected_total{brand="acme",reason="schema_violation"}'
    unauthorized = 'siyu_collector_requests_total{status="401"}'
    before = [sample(accepted), sample(rejected), sample(unauthorized)]
    c.send({"events": [_acme(tag, 0), _acme(tag, 1), _acme(tag, 2, amount="x")]}, c.key_acme)
    c.send(_acme(tag, 3), None)
    after = [sample(accepted), sample(rejected), sample(unauthorized)]
    assert [a - b for a, b in zip(after, before, strict=True)] == [2, 1, 1]
    assert sample("siyu_collector_request_seconds_count") > 0


def test_requests_beyond_the_in_flight_limit_get_429_and_slots_come_back(
    collector: Running,
) -> None:
    c = collector

    def inflight() -> float:
        for line in str(get(c.proc.url + "/metrics").body).splitlines():
            if line.startswith("siyu_collector_inflight_requests "):
                return float(line.split()[-1])
        raise AssertionError("no siyu_collector_inflight_requests in /metrics")

    # Uploads that sent their headers but not all of their body hold every slot.
    head = (
        "POST /v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {c.key_acme}\r\nContent-Type: application/json\r\n"
        "Content-Length: 1000\r\n\r\n{"
    ).encode()
    slow = [socket.create_connection(("127.0.0.1", c.proc.port)) for _ in range(MAX_INFLIGHT)]
    try:
        for sock in slow:
            sock.sendall(head)
        wait_for(lambda: inflight() == MAX_INFLIGHT, 30, "the slow uploads holding every slot")
        busy = c.send({"events": [_acme(_tag(), 0)]}, c.key_acme)
        assert (busy.status, busy.body["error"]) == (429, "busy")
        assert busy.headers["Retry-After"] == "1"
    finally:
        for sock in slow:
            sock.close()
    # Clients that give up mid-body give their slots back.
    wait_for(lambda: inflight() == 0, 30, "the slots given back")
    assert c.send({"events": [_acme(_tag(), 0)]}, c.key_acme).status == 200


def test_with_kafka_stopped_503_and_nothing_accepted_then_the_same_request_succeeds(
    collector: Running,
) -> None:
    """503 with Retry-After while Kafka is down, nothing of the refused request written
    afterwards, and the same request accepted once Kafka is back.

    A 503 that comes after the messages were handed to the producer cannot take them back
    (Kafka may still write them): the client retries and the pipeline drops the copies by
    event_id. So the resend waits for /readyz, as a client honouring Retry-After would,
    and copies are only tolerated from attempts made after Kafka returned.
    """
    c = collector
    tag = _tag()
    body = {"events": [_acme(tag, i) for i in range(5)]}
    before = c.offsets()
    with kafka_stopped():  # restarted on the way out, even on failure
        down = c.send(body, c.key_acme)
        assert down.status == 503, down
        assert down.body["error"] == "kafka_unavailable"
        assert down.headers["Retry-After"] == "1"
        assert "none was accepted" in down.body["message"]
        assert get(c.proc.url + "/readyz").status == 503

    wait_for(lambda: get(c.proc.url + "/readyz").status == 200, 90, "collector ready again")
    time.sleep(2)  # time for anything the refused request left in the producer to land
    assert c.offsets() == before, "the refused request wrote to Kafka after all"

    answers: list[Answer] = []

    def retried() -> bool:
        answer = c.send(body, c.key_acme)
        answers.append(answer)
        if answer.status == 200:
            return True
        assert answer.status in (429, 503), answer
        time.sleep(int(answer.headers["Retry-After"]))
        return False

    wait_for(retried, 60, "the collector to accept the same request again")
    assert answers[-1].body["accepted"] == 5
    ids = _ids_in_topic(c, tag)
    assert set(ids) == {e["event_id"] for e in body["events"]}
    assert all(ids.count(i) <= len(answers) for i in set(ids))
