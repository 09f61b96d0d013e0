"""The Faust app built from settings: what a deployment configures reaches Faust.

Building the app connects to nothing, so these run without Kafka.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.app import create_app
from pipeline.settings import load_settings


@pytest.mark.parametrize("replicas", [0, 2])
def test_standby_replicas_setting_reaches_the_partition_assignor(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, replicas: int
) -> None:
    monkeypatch.setenv("SIYU_STANDBY_REPLICAS", str(replicas))
    monkeypatch.setenv("SIYU_DATA_DIR", str(tmp_path))
    app = create_app(load_settings())
    assert app.conf.table_standby_replicas == replicas
    # The assignor is what places standby partitions on other workers.
    assert app.assignor.replicas == replicas


def test_standby_replicas_default_keeps_one_warm_copy(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)  # no .env
    monkeypatch.delenv("SIYU_STANDBY_REPLICAS", raising=False)
    assert load_settings().standby_replicas == 1


def test_health_and_readiness_pages_are_registered(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("SIYU_DATA_DIR", str(tmp_path))
    app = create_app(load_settings())
    assert {"/healthz", "/readyz"} <= set(app.web.views)
