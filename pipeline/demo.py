"""``siyu demo``: generated events through the real pipeline, and what landed in ClickHouse.

The generator here is deliberately small (a brand, KOL posts, shares and re-shares,
purchases, and a few malformed inputs of each kind); it is seeded, so the same seed gives
the same events and event ids, and running the demo twice shows that replays are absorbed.
"""

from __future__ import annotations

import datetime as dt
import os
import random
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import orjson

from pipeline.settings import Settings
from pipeline.sink.clickhouse import check_identifier, client_from_url

Echo = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class GeneratedLog:
    """Messages to send: envelopes of valid events and malformed messages."""

    messages: list[bytes]
    valid_by_type: Counter[str]
    invalid_by_reason: Counter[str]
    brand_id: str


def generate(n_events: int, seed: int, brand_id: str = "demo-brand") -> GeneratedLog:
    """A seeded log of about ``n_events`` valid events plus ~2% malformed input."""
    rng = random.Random(seed)
    start = dt.datetime(2026, 11, 11, 0, 0, tzinfo=dt.UTC)
    users = [f"u{i:05d}" for i in range(max(10, n_events // 8))]
    kols = [f"kol-{name}" for name in ("lin", "zhao", "chen", "wu", "zhou")]
    channels = ["kol_post", "wechat_group", "mini_program", "app", "official_account"]
    shares: list[str] = []
    events: list[dict[str, object]] = []
    by_type: Counter[str] = Counter()
    for i in range(n_events):
        t = start + dt.timedelta(seconds=i * 7 + rng.randint(0, 5))
        user = rng.choice(users)
        base: dict[str, object] = {
            "event_id": f"{brand_id}-{seed}-{i}",
            "schema_version": 1,
            "brand_id": brand_id,
            "user_id": user,
            "occurred_at": t.isoformat(),
            "channel": rng.choice(channels),
        }
        roll = rng.random()
        if roll < 0.6:
            base["type"] = "click"
            if shares and rng.random() < 0.4:
                base["share_id"] = rng.choice(shares)
            else:
                base["kol_id"] = rng.choice(kols)
        elif roll < 0.8:
            base["type"] = "share"
            base["share_id"] = f"s-{seed}-{i}"
            if shares and rng.random() < 0.3:
                base["parent_share_id"] = rng.choice(shares)
            shares.append(str(base["share_id"]))
        else:
            base["type"] = "purchase"
            base["order_id"] = f"o-{seed}-{i}"
            base["amount"] = f"{rng.choice([19.9, 59, 99, 199, 399]):.2f}"
            base["currency"] = "CNY"
        by_type[str(base["type"])] += 1
        events.append(base)
    messages = [orjson.dumps({"events": events[i : i + 100]}) for i in range(0, len(events), 100)]
    bad: Counter[str] = Counter()
    for j in range(max(1, n_events // 50)):
        kind = j % 4
        if kind == 0:
            messages.append(b'{"event_id": "broken' + str(j).encode())
            bad["invalid_json"] += 1
        elif kind == 1:
            messages.append(
                orjson.dumps(
                    {
                        **events[j],
                        "currency": "yuan",
                        "type": "purchase",
                        "order_id": f"bad-{j}",
                        "amount": "1",
                        "event_id": f"bad-{seed}-{j}",
                    }
                )
            )
            bad["schema_violation"] += 1
        elif kind == 2:
            messages.append(
                orjson.dumps({**events[j], "schema_version": 2, "event_id": f"bad-{seed}-{j}"})
            )
            bad["unsupported_schema_version"] += 1
        else:
            messages.append(
                orjson.dumps({**events[j], "type": "refund", "event_id": f"bad-{seed}-{j}"})
            )
            bad["unknown_type"] += 1
    rng.shuffle(messages)
    return GeneratedLog(messages, by_type, bad, brand_id)


def send(settings: Settings, messages: list[bytes]) -> None:
    """Produce ``messages`` to the events topic with acks=all and wait for all of them."""
    from kafka import KafkaProducer

    producer = KafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap,
        acks="all",
        linger_ms=20,
        max_request_size=8 * 1024 * 1024,
    )
    try:
        futures = [producer.send(settings.topic_events, value=m) for m in messages]
        producer.flush()
        for f in futures:
            f.get(timeout=30)
    finally:
        producer.close()


def _count_landed(settings: Settings, brand_id: str, since: int) -> tuple[int, int]:
    db = check_identifier(settings.clickhouse_database)
    client = client_from_url(settings.clickhouse_url)
    try:
        events = client.execute(
            f"SELECT count() FROM {db}.events FINAL WHERE brand_id = %(brand)s",
            {"brand": brand_id},
        )[0][0]
        dead = client.execute(
            f"SELECT count() FROM {db}.dead_letters FINAL "
            "WHERE source_topic = %(topic)s AND dead_lettered_at >= %(since)s",
            {"topic": settings.topic_events, "since": dt.datetime.fromtimestamp(since, dt.UTC)},
        )[0][0]
    finally:
        client.disconnect()
    return int(events), int(dead)


def start_worker(settings: Settings, echo: Echo, timeout: float = 90.0) -> subprocess.Popen[bytes]:
    """Start ``siyu worker`` in the background and wait until /readyz answers 200."""
    log_path = os.path.join(".local", "demo-worker.log")
    os.makedirs(".local", exist_ok=True)
    log = open(log_path, "wb")  # noqa: SIM115 - handed to the child process
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", "worker"], stdout=log, stderr=subprocess.STDOUT
    )
    url = f"http://{settings.worker_web_host}:{settings.worker_web_port}/readyz"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"worker exited with {proc.returncode}; see {log_path}")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    echo(f"worker ready (pid {proc.pid}, log {log_path})")
                    return proc
        except OSError:
            pass
        time.sleep(0.5)
    proc.terminate()
    raise RuntimeError(f"worker not ready after {timeout:.0f}s; see {log_path}")


def stop_worker(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the worker (it commits what is done) and wait for it."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def run_demo(settings: Settings, *, n_events: int, seed: int, timeout: float, echo: Echo) -> None:
    """Generate, send, wait until ClickHouse shows it all, print the summary."""
    gen = generate(n_events, seed)
    n_valid, n_bad = sum(gen.valid_by_type.values()), sum(gen.invalid_by_reason.values())
    since = int(time.time()) - 1
    worker = start_worker(settings, echo)
    try:
        echo(f"sending {n_valid} valid events in envelopes and {n_bad} malformed messages")
        send(settings, gen.messages)
        deadline = time.monotonic() + timeout
        landed = (0, 0)
        while time.monotonic() < deadline:
            landed = _count_landed(settings, gen.brand_id, since)
            if landed[0] >= n_valid and landed[1] >= n_bad:
                break
            time.sleep(0.5)
        else:
            raise RuntimeError(
                f"after {timeout:.0f}s ClickHouse shows {landed[0]}/{n_valid} events and "
                f"{landed[1]}/{n_bad} dead letters; see .local/demo-worker.log"
            )
    finally:
        stop_worker(worker)
    print_summary(settings, echo=echo)


def print_summary(settings: Settings, *, echo: Echo) -> None:
    """Events by type and dead letters by reason, read back from ClickHouse."""
    db = check_identifier(settings.clickhouse_database)
    client = client_from_url(settings.clickhouse_url)
    try:
        by_type = client.execute(
            f"SELECT toString(type), count() FROM {db}.events FINAL GROUP BY type ORDER BY type"
        )
        by_reason = client.execute(
            f"SELECT toString(reason), count() FROM {db}.dead_letters FINAL "
            "GROUP BY reason ORDER BY count() DESC"
        )
    finally:
        client.disconnect()
    echo("")
    echo("events in ClickHouse (each once):")
    for t, n in by_type:
        echo(f"  {t:<10} {n:>8}")
    echo("dead letters by reason:")
    for r, n in by_reason or [("(none)", 0)]:
        echo(f"  {r:<28} {n:>6}")
