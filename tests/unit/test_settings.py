"""Settings: SIYU_* variables, defaults that match the local stack, one-line errors."""

from __future__ import annotations

import pytest

from pipeline.errors import ConfigError
from pipeline.settings import load_settings


def test_defaults_match_the_local_stack(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir("/")  # no .env
    s = load_settings()
    assert s.kafka_bootstrap == "127.0.0.1:19092"
    assert s.clickhouse_address == "127.0.0.1:19000"
    assert s.clickhouse_database == "siyu"


def test_environment_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIYU_KAFKA_BOOTSTRAP", "k1:9092,k2:9092")
    monkeypatch.setenv("SIYU_CLICKHOUSE_URL", "clickhouse://u:p%40ss@ch:9440/analytics")
    s = load_settings()
    assert s.kafka_broker_urls == ["kafka://k1:9092", "kafka://k2:9092"]
    assert s.clickhouse_database == "analytics"


def test_dotenv_is_read(monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> None:
    import pathlib

    assert isinstance(tmp_path, pathlib.Path)
    (tmp_path / ".env").write_text("SIYU_TOPIC_PARTITIONS=12\n")
    monkeypatch.chdir(tmp_path)
    assert load_settings().topic_partitions == 12


@pytest.mark.parametrize(
    ("var", "value"),
    [
        ("SIYU_KAFKA_BOOTSTRAP", "localhost"),
        ("SIYU_CLICKHOUSE_URL", "http://x"),
        ("SIYU_TOPIC_PARTITIONS", "zero"),
    ],
)
def test_bad_value_is_one_line_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, var: str, value: str
) -> None:
    monkeypatch.setenv(var, value)
    with pytest.raises(ConfigError) as err:
        load_settings()
    assert var in str(err.value)
    assert "\n" not in str(err.value)
