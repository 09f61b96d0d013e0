"""``siyu emit FILE.jsonl --via kafka``: valid lines reach the topic, bad lines are reported
with their numbers and make the exit code 1; a clean file exits 0."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.integration.collector_env import event_ids, read_topic
from tests.integration.conftest import FreshTopic
from tests.integration.pipeline_env import REPO
from tests.unit.contract.test_events import purchase


def _emit(path: Path, bootstrap: str, topic: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "emit", str(path), "--via", "kafka", "--quiet"],
        env={**os.environ, "SIYU_KAFKA_BOOTSTRAP": bootstrap, "SIYU_TOPIC_EVENTS": topic},
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
        check=False,
    )


def test_emit_sends_the_good_lines_and_reports_the_bad_ones(
    kafka_bootstrap: str, fresh_topic: FreshTopic, tmp_path: Path
) -> None:
    topic = fresh_topic(partitions=3)
    good = [purchase(event_id=f"e{i}", order_id=f"o{i}", user_id=f"u{i}") for i in range(10)]
    lines = [json.dumps(e) for e in good[:3]]
    lines.append('{"event_id": "e-broken", ')  # line 4: not JSON
    lines.append("")  # a blank line is not an event, and not an error
    lines.append(json.dumps(purchase(event_id="e-neg", amount="-1")))  # line 6
    lines.append(json.dumps({"events": good[3:]}))  # an envelope line
    lines.append(json.dumps({"events": [purchase(event_id="e-cur", currency="yuan")]}))
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join(lines) + "\n")

    done = _emit(path, kafka_bootstrap, topic)
    assert done.returncode == 1, done
    assert "sent 10 event(s) via kafka" in done.stdout
    assert "3 bad line(s) not sent" in done.stderr
    assert "line 4: invalid_json" in done.stderr
    assert "line 6: schema_violation: purchase.amount" in done.stderr
    assert "line 8 event 0: schema_violation: purchase.currency" in done.stderr
    assert sorted(event_ids(read_topic(kafka_bootstrap, topic))) == sorted(
        e["event_id"] for e in good
    )

    clean = tmp_path / "clean.jsonl"
    clean.write_text("\n".join(json.dumps(e) for e in good[:2]) + "\n")
    done = _emit(clean, kafka_bootstrap, topic)
    assert done.returncode == 0, done
    assert "sent 2 event(s) via kafka" in done.stdout and done.stderr == ""
