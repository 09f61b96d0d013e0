"""Garbage on a topic between the agents is dead-lettered; the worker and its agents go on.

Only siyu writes the by-* topics, but a worker exits on any error its batch handling did
not expect (crash-only), and would meet the same message after every restart: a foreign
or corrupt message there must cost a dead letter, never the worker.
"""

from __future__ import annotations

from pathlib import Path

import orjson

from pipeline.contract.deadletter import H_INDEX, H_REASON, H_TOPIC
from pipeline.contract.partitioning import partition_for
from tests.integration.pipeline_env import (
    PipelineEnv,
    produce,
    read_messages,
    running_worker,
    wait_for,
)
from tests.integration.test_topology import quiescent
from tests.unit.contract.test_events import purchase

#: (message, the dead letters it makes: element index or None for the whole message)
GARBAGE: list[tuple[bytes, list[int | None]]] = [
    (b"{not json", [None]),
    (b'{"wm": {}, "m": 5}', [None]),
    (b'{"wm": [], "m": []}', [None]),
    (b'{"wm": {}, "m": ["x", {"processor": "user"}]}', [0, 1]),
]


def test_garbage_on_a_state_topic_is_dead_lettered_and_the_agents_go_on(
    penv: PipelineEnv, tmp_path: Path
) -> None:
    s = penv.settings()
    # Progress far ahead for every events partition, in an envelope dead-lettered for its
    # messages, sent to the partition of the user whose purchase comes next: merged anyway,
    # it would make that purchase too late.
    ahead = {str(p): 4_000_000_000_000_000 for p in range(s.topic_partitions)}
    jump = orjson.dumps({"wm": ahead, "m": 5})
    garbage = [*GARBAGE, (jump, [None])]
    user = "u-after-garbage"
    with running_worker(penv, tmp_path / "worker.log") as worker:
        produce(s.kafka_bootstrap, s.topic_by_user, [m for m, _ in GARBAGE])
        produce(
            s.kafka_bootstrap,
            s.topic_by_user,
            [jump],
            partition_for("b", user, s.topic_partitions),
        )
        expected = sum(len(idx) for _, idx in garbage)
        letters = read_messages(s.kafka_bootstrap, s.topic_dead_letters, expected)
        got = sorted(
            (dict(m.headers)[H_TOPIC].decode(), int(dict(m.headers)[H_INDEX])) for m in letters
        )
        assert got == sorted(
            (s.topic_by_user, -1 if i is None else i) for _, idx in garbage for i in idx
        )
        assert {dict(m.headers)[H_REASON] for m in letters} == {b"processing_error"}
        assert worker.proc.poll() is None

        # The user agent still steps real events: a purchase reaches user_loyalty.
        event = purchase(event_id="after-garbage", user_id=user)
        produce(s.kafka_bootstrap, s.topic_events, [orjson.dumps(event)])
        wait_for(
            lambda: penv.query(
                "SELECT count() FROM user_loyalty WHERE user_id = %(u)s", {"u": user}
            )[0][0]
            > 0,
            90,
            "the purchase's user_loyalty row",
        )
        wait_for(lambda: quiescent(penv), 90, "the pipeline to go quiet", interval=0.3)
        late = penv.query(
            "SELECT count() FROM late_events WHERE event_id = %(e)s", {"e": "after-garbage"}
        )
        assert late == [(0,)], "a dead-lettered envelope moved the watermark"
        assert worker.proc.poll() is None
