"""The worker's topics: created with the right configs, refused when they disagree."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from pipeline.kafka.topics import admin_client, changelog_topic, topic_configs
from tests.integration.pipeline_env import PipelineEnv


@pytest.fixture
def penv0(kafka_bootstrap: str) -> Iterator[PipelineEnv]:
    """A namespace of topics only (no database); its topics are deleted afterwards."""
    env = PipelineEnv.fresh(kafka_bootstrap, 0)
    yield env
    env.cleanup()


def test_missing_topics_are_created_and_changelogs_are_compacted(
    kafka_bootstrap: str, penv0: PipelineEnv
) -> None:
    penv = penv0
    first = penv.siyu("topics")
    assert first.returncode == 0, first.stderr
    assert "created:" in first.stdout
    again = penv.siyu("topics")
    assert again.returncode == 0 and "present and correct" in again.stdout
    admin = admin_client(kafka_bootstrap)
    try:
        s = penv.settings()
        assert topic_configs(admin, changelog_topic(s.app_id, "state-user"))["cleanup.policy"] == (
            "compact"
        )
        assert topic_configs(admin, s.topic_by_user)["cleanup.policy"] == "delete"
    finally:
        admin.close()


def test_existing_topics_that_disagree_stop_the_start_with_one_clear_line(
    penv0: PipelineEnv,
) -> None:
    penv = penv0
    assert penv.siyu("topics").returncode == 0
    refused = penv.siyu("topics", SIYU_TOPIC_PARTITIONS="6")
    assert refused.returncode == 2
    assert "has 4 partitions, siyu is configured for 6" in refused.stderr
    assert "Traceback" not in refused.stderr
    worker = penv.siyu("worker", SIYU_TOPIC_PARTITIONS="6")
    assert worker.returncode == 2
    assert "SIYU_TOPIC_PARTITIONS" in worker.stderr


def test_a_session_timeout_the_brokers_refuse_stops_the_start_with_one_clear_line(
    penv0: PipelineEnv,
) -> None:
    # Before the check, such a worker started, had its group join refused
    # (InvalidSessionTimeout) and waited for ever, never ready.
    worker = penv0.siyu("worker", SIYU_SESSION_TIMEOUT_S="1")
    assert worker.returncode == 2
    assert "SIYU_SESSION_TIMEOUT_S=1 is outside" in worker.stderr
    assert "6 to 1800 s" in worker.stderr  # the local broker's defaults
    assert "Traceback" not in worker.stderr


def test_changelogs_take_a_state_larger_than_kafkas_default_and_a_low_limit_is_raised(
    kafka_bootstrap: str, penv0: PipelineEnv
) -> None:
    from kafka.admin import ConfigResource, ConfigResourceType

    penv = penv0
    s = penv.settings()
    changelog = changelog_topic(s.app_id, "state-share")
    assert penv.siyu("topics").returncode == 0
    admin = admin_client(kafka_bootstrap)
    try:
        assert int(topic_configs(admin, changelog)["max.message.bytes"]) == s.max_state_bytes
        # A changelog from before this limit existed: Kafka's default (about 1 MiB).
        admin.alter_configs(
            [ConfigResource(ConfigResourceType.TOPIC, changelog, {"max.message.bytes": "1048588"})],
            incremental=True,
        )
        again = penv.siyu("topics")
        assert again.returncode == 0, again.stderr
        assert int(topic_configs(admin, changelog)["max.message.bytes"]) == s.max_state_bytes
        # A larger limit set by the operator is left alone.
        bigger = str(s.max_state_bytes * 2)
        admin.alter_configs(
            [ConfigResource(ConfigResourceType.TOPIC, changelog, {"max.message.bytes": bigger})],
            incremental=True,
        )
        assert penv.siyu("topics").returncode == 0
        assert topic_configs(admin, changelog)["max.message.bytes"] == bigger
    finally:
        admin.close()
