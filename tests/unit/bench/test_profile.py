"""tests/bench/profile.py's reading of py-spy samples: each sample counts for one part."""

from __future__ import annotations

from pathlib import Path

from tests.bench.profile import OTHER, OTHER_THREADS, analyse, markdown
from tests.integration.pipeline_env import REPO


def test_a_sample_counts_for_the_first_part_on_its_stack(tmp_path: Path) -> None:
    # py-spy names files relative to their sys.path entry; absolute paths are cut alike.
    loop = "run_forever (asyncio/base_events.py:600)"
    batch = "StateAgent.state_batch (pipeline/worker/state.py:81)"
    step = f"KeyBatch.step ({REPO}/pipeline/worker/state.py:318)"  # wherever the checkout is
    user = "UserProcessor.step (pipeline/domain/users.py:253)"
    insert = "ClickHouseWriter._insert_sync (pipeline/sink/writer.py:83)"
    column = "String.write_items (/v/lib/python3.11/site-packages/clickhouse_driver/c.py:9)"
    raw = tmp_path / "samples.txt"
    raw.write_text(
        f"{loop};{batch};{step};{user} 6\n"  # the domain step, inside a state batch
        f"{loop};{batch} 2\n"  # the batch's own work
        f"Thread.run (/usr/lib/python3.11/threading.py:975);{insert};{column} 1\n"
        f"{loop} 1\n"
    )
    got = analyse(raw, top=5)
    assert got["samples"] == 10
    assert got["parts"]["domain steps (pipeline/domain)"] == 0.6
    assert got["parts"]["state agents: the rest of a batch"] == 0.2
    assert got["parts"]["ClickHouse client (the sink's insert thread)"] == 0.1
    assert got["parts"][OTHER] == 0.1
    assert abs(sum(got["parts"].values()) - 1) < 1e-9
    assert got["functions"][0] == ("UserProcessor.step (pipeline/domain/users.py)", 0.6)
    modules = dict(got["modules"])
    assert modules["clickhouse_driver"] == 0.1
    assert modules["asyncio"] == 0.1
    assert modules["pipeline/worker/state.py"] == 0.2


def test_a_sample_counts_for_the_thread_that_runs_its_stack(tmp_path: Path) -> None:
    main = "<module> (pipeline/cli.py:200);run_forever (asyncio/base_events.py:607)"
    # The Kafka consumer's fetches run on the event loop (pipeline/worker/faust/aiokafka.py).
    fetch = "Fetcher._proc_fetch_request (aiokafka/consumer/fetcher.py:747)"
    thread = "Thread.run (threading.py:982)"
    insert = f"{thread};ClickHouseWriter._insert_sync (pipeline/sink/writer.py:87)"
    admin = f"{thread};NetworkSelector.run_forever (kafka/net/selector.py:239)"
    raw = tmp_path / "samples.txt"
    raw.write_text(
        f"{main};StateAgent.state_batch (pipeline/worker/state.py:81) 3\n"
        f"{main};{fetch} 2\n"
        f"{insert} 2\n"
        f"{admin} 3\n"
    )
    got = analyse(raw, top=5)["threads"]
    assert got == {
        "event loop: agents, Kafka consumer and producer, sink": 0.5,
        "ClickHouse insert thread": 0.2,
        OTHER_THREADS: 0.3,
    }


def test_the_report_says_whether_the_events_came_as_a_backlog_or_live(tmp_path: Path) -> None:
    raw = tmp_path / "samples.txt"
    raw.write_text("<module> (pipeline/cli.py:200) 1\n")
    profile = analyse(raw, top=5) | {"cpu_us_per_event": 300.0, "seconds": 30.0, "rate": 200}
    meta = {"when": "now", "setup": "here", "events": 45_000, "users": 4_500}
    backlog = markdown({"meta": meta | {"live_rate": None}, "profile": profile})
    live = markdown({"meta": meta | {"live_rate": 1500.0}, "profile": profile})
    assert "as a backlog" in backlog and "live" not in backlog
    assert "as live traffic at 1,500 events/s" in live and "backlog" not in live
    assert "| event loop: agents, Kafka consumer and producer, sink | 100.0% | 300 |" in live
