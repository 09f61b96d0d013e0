"""Offsets as Kafka keeps them: a group's committed offsets and partitions' ends.

A committed offset is the next offset to read. A group that never committed a partition has
none (``None``, or ``-1`` from some clients), which counts as 0: everything in the partition
is still to be read (:func:`committed_or_zero`, the one statement of that rule).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

#: A topic partition as a plain pair: ``(topic, partition)``.
Partition = tuple[str, int]


def committed_or_zero(committed: int | None) -> int:
    """A committed offset, with "never committed" (None or negative) as 0."""
    return committed if committed is not None and committed >= 0 else 0


class OffsetReader:
    """A group's committed offsets and the end offsets of partitions, from the broker, over
    one admin connection kept between calls (the watermark confirmation asks twice a
    second). Blocking: call it from an executor, one reader per caller."""

    def __init__(self, bootstrap: str, group: str) -> None:
        self.bootstrap = bootstrap
        self.group = group
        self._admin: Any = None

    def close(self) -> None:
        if self._admin is not None:
            self._admin.close()
            self._admin = None

    def __call__(
        self, partitions: list[Partition]
    ) -> tuple[dict[Partition, int | None], dict[Partition, int]]:
        from kafka import TopicPartition
        from kafka.admin import OffsetSpec

        tps = [TopicPartition(t, p) for t, p in partitions]
        listed: Any = self._ask(lambda admin: admin.list_group_offsets({self.group: None}))
        listed = listed.get(self.group, {})
        ends: Any = self._ask(
            lambda admin: admin.list_partition_offsets(dict.fromkeys(tps, OffsetSpec.LATEST))
        )
        committed = {
            (tp.topic, tp.partition): (listed[tp].offset if tp in listed else None) for tp in tps
        }
        return committed, {(tp.topic, tp.partition): int(o.offset) for tp, o in ends.items()}

    def starts(self, partitions: list[Partition]) -> dict[Partition, int]:
        """The first offset each partition still holds (older records were deleted)."""
        from kafka import TopicPartition
        from kafka.admin import OffsetSpec

        tps = [TopicPartition(t, p) for t, p in partitions]
        firsts: Any = self._ask(
            lambda admin: admin.list_partition_offsets(dict.fromkeys(tps, OffsetSpec.EARLIEST))
        )
        return {(tp.topic, tp.partition): int(o.offset) for tp, o in firsts.items()}

    def _ask(self, question: Callable[[Any], Any]) -> Any:
        from kafka import KafkaAdminClient

        if self._admin is None:
            self._admin = KafkaAdminClient(
                bootstrap_servers=self.bootstrap, request_timeout_ms=10_000
            )
        try:
            return question(self._admin)
        except Exception:
            self.close()  # connect again on the next call
            raise
