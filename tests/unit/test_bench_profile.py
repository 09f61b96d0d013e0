"""bench/profile.py's reading of py-spy samples: each sample counts for one part."""

from __future__ import annotations

from pathlib import Path

from bench.profile import OTHER, analyse
from tests.integration.pipeline_env import REPO


def test_a_sample_counts_for_the_first_part_on_its_stack(tmp_path: Path) -> None:
    # py-spy names files relative to their sys.path entry; absolute paths are cut alike.
    loop = "run_forever (asyncio/base_events.py:600)"
    batch = "Topology._state_batch (pipeline/topology.py:296)"
    step = f"_KeyBatch.step ({REPO}/pipeline/topology.py:575)"  # wherever the checkout is
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
    assert modules["pipeline/topology.py"] == 0.2
