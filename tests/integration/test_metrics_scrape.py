"""A running worker's /metrics, scraped over HTTP after a generated scenario and some bad
input, counts exactly what was sent: events per brand and type, duplicates, dead letters per
reason, clicks and purchases per channel, attributed purchases per kind (against the batch
oracle), rows inserted into ClickHouse; and its lag returns to zero."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import orjson
from kafka import KafkaProducer

from tests.integration.pipeline_env import (
    PipelineEnv,
    Samples,
    by,
    running_worker,
    scrape,
    wait_for,
)
from tests.integration.test_topology import quiescent, send_paced
from tests.oracle import recompute
from tests.scenario import generate

#: Bad input sent after the scenario: (message bytes, dead-letter reason, brand_id read).
BAD = [
    (b"{not json", "invalid_json", ""),
    (
        orjson.dumps(
            {
                "events": [
                    {"event_id": "bad-1", "type": "click", "schema_version": 1, "brand_id": "acme"}
                ]
            }
        ),
        "schema_violation",
        "acme",
    ),
    (
        orjson.dumps(
            {
                "event_id": "bad-2",
                "type": "like",
                "schema_version": 1,
                "brand_id": "bright",
                "user_id": "u1",
                "occurred_at": "2026-11-02T00:00:00+00:00",
                "channel": "app",
            }
        ),
        "unknown_type",
        "bright",
    ),
]


def caught_up(samples: Samples) -> Samples | None:
    """``samples`` if they have lag series and every one is 0."""
    lags = [v for (name, _), v in samples.items() if name == "siyu_consumer_lag_messages"]
    return samples if lags and not any(lags) else None


def user_state_keys(samples: Samples) -> int:
    return by(samples, "siyu_state_keys", "processor")[("user",)]


def caught_up_with(samples: Samples, users: int) -> Samples | None:
    """``samples`` if every partition is caught up and the user state counts ``users``."""
    return samples if caught_up(samples) and user_state_keys(samples) >= users else None


def test_worker_metrics_count_what_was_sent(penv: PipelineEnv, tmp_path: Path) -> None:
    scenario = generate(seed=606, n_events=600)
    expected_credits = recompute(scenario.arrival).credits
    users = {(e.brand_id, e.user_id) for e in scenario.events}
    s = penv.settings()
    with running_worker(penv, tmp_path / "worker.log") as worker:
        send_paced(penv, scenario.arrival)
        producer = KafkaProducer(bootstrap_servers=s.kafka_bootstrap, acks="all")
        for message, _, _ in BAD:
            producer.send(s.topic_events, message)
        producer.flush()
        producer.close()
        wait_for(lambda: quiescent(penv), 120, "the pipeline to go quiet", interval=0.3)
        # Lag and state sizes are sampled every 5 s, so a scrape may show a sample taken
        # before the pipeline went quiet (a consumer that has not fetched yet reports lag 0):
        # wait for a sample with every partition caught up and every user's state counted.
        samples = wait_for(
            lambda: caught_up_with(scrape(worker.port), len(users)),
            30,
            "consumer lag back to 0 and every user's state counted",
        )

    # send_paced sends steps of 150 events in chunks of 40: envelopes, every fifth chunk
    # as single-event messages.
    messages = len(BAD)
    for i in range(0, len(scenario.arrival), 150):
        step = scenario.arrival[i : i + 150]
        for j, k in enumerate(range(0, len(step), 40)):
            messages += 1 if j % 5 != 4 else len(step[k : k + 40])
    assert by(samples, "siyu_ingest_messages_total") == Counter({(): messages})

    sent = Counter((e.brand_id, e.type) for e in scenario.arrival)
    unique = Counter((e.brand_id, e.type) for e in scenario.events)
    assert by(samples, "siyu_events_accepted_total", "brand_id", "type") == sent
    assert by(samples, "siyu_duplicate_events_total", "brand_id", "type") == sent - unique
    consumed = sent + Counter((brand, "") for _, _, brand in BAD)
    assert by(samples, "siyu_events_consumed_total", "brand_id", "type") == consumed
    assert by(samples, "siyu_dead_letters_total", "reason", "brand_id") == Counter(
        (reason, brand) for _, reason, brand in BAD
    )

    clicks = Counter((e.brand_id, e.channel) for e in scenario.events if e.type == "click")
    purchases = Counter((e.brand_id, e.channel) for e in scenario.events if e.type == "purchase")
    assert by(samples, "siyu_clicks_total", "brand_id", "channel") == clicks
    assert by(samples, "siyu_purchases_total", "brand_id", "channel") == purchases
    net = by(samples, "siyu_attributed_purchases_total", "brand_id", "kind")
    net.subtract(by(samples, "siyu_attribution_retractions_total", "brand_id", "kind"))
    attributed = Counter(
        (brand, c["kind"]) for (brand, _), c in expected_credits.items() if c["kind"] != "organic"
    )
    assert attributed and +net == attributed
    # Each distinct event was processed once by the user processor.
    count = by(samples, "siyu_event_processing_latency_seconds_count")
    assert count == Counter({(): len(scenario.events)})

    assert by(samples, "siyu_sink_rows_inserted_total", "table")[("events",)] == len(
        scenario.arrival
    )
    assert by(samples, "siyu_sink_rows_inserted_total", "table")[("dead_letters",)] == len(BAD)
    visible = by(samples, "siyu_visible_latency_seconds_count", "table")
    assert visible[("events",)] == len(scenario.arrival)
    # The worker watched its event loop all along, four looks a second.
    assert sum(by(samples, "siyu_event_loop_lag_seconds_count").values()) >= 4
    # Every user's state (waited for above), plus at most one watermark entry per partition.
    assert user_state_keys(samples) <= len(users) + s.topic_partitions
