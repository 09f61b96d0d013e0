"""pipeline/worker/faust/recovery.py: where reading a changelog starts."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from typing import Any

import pytest
from faust.types import TP

from pipeline.worker.faust.recovery import TakeAtATimeRecovery


class _Consumer:
    def __init__(self) -> None:
        self.seeks: dict[Any, int] = {}

    async def seek_wait(self, partitions: dict[Any, int]) -> None:
        # aiokafka's seek refuses what is not a non-negative int (ValueError).
        assert all(isinstance(o, int) and o >= 0 for o in partitions.values()), partitions
        self.seeks.update(partitions)


def test_a_changelog_offset_faust_never_learnt_is_read_from_the_start(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A standby partition added in an earlier round of a recovery that a rebalance cut
    short keeps Faust's placeholder None; seeking it crashed the worker."""
    never, empty, applied = TP("c", 0), TP("c", 1), TP("c", 2)
    offsets: Counter[Any] = Counter({empty: -1, applied: 41})
    offsets[never] = None  # type: ignore[assignment]  # Faust's placeholder
    consumer = _Consumer()
    with caplog.at_level(logging.WARNING, logger="pipeline.worker.faust.recovery"):
        asyncio.run(
            TakeAtATimeRecovery._seek_offsets(
                None,  # type: ignore[arg-type]  # uses nothing of the service
                consumer,
                {never, empty, applied},
                offsets,
                "standby",
            )
        )
    # -1 and None read from the start; a known offset is kept as Faust keeps it.
    assert consumer.seeks == {never: 0, empty: 0, applied: 41}
    assert "c[0]" in caplog.text and "c[1]" not in caplog.text
