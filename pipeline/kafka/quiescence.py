"""Is the pipeline quiet? Every consumer group has committed the end of every topic it reads.

A driver that sends events and then reads answers from ClickHouse (``siyu demo``, a replay)
needs to know when nothing is in flight any more. Row counts cannot tell: an answer can be
complete in count and still about to change (a credit retracted a moment later). Offsets
can: each agent commits its input only after Kafka confirmed its output, and the sink
commits only after ClickHouse accepted the rows, so when every group has committed the end
of every partition it reads, every effect of every message sent so far is in ClickHouse.

One look is not enough: between reading one group's offsets and the next topic's end, a
message may have moved from one to the other. So the pipeline is quiet only when two looks
in a row find everything committed and the same end offsets.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kafka import KafkaAdminClient, TopicPartition
from kafka.admin import OffsetSpec
from kafka.errors import KafkaError

from pipeline.errors import ServiceUnavailable, SiyuError
from pipeline.kafka.offsets import committed_or_zero
from pipeline.kafka.topics import admin_client
from pipeline.settings import Settings


class NotQuiet(SiyuError):
    """The pipeline did not go quiet in time."""


def pipeline_groups(s: Settings, include_sink: bool = True) -> dict[str, list[str]]:
    """The consumer groups of a worker and the topics each reads.

    The agents consume as the Faust app (group ``app_id``); the ClickHouse sink is a consumer
    of its own, ``<app_id>-sink`` (pipeline/sink/service.py), over rows and dead letters.
    """
    groups = {s.app_id: s.agent_topics()}
    if include_sink:
        groups[f"{s.app_id}-sink"] = s.sink_topics()
    return groups


@dataclass(frozen=True, slots=True)
class Look:
    """One look at the offsets: messages not yet committed per group, and the end offsets."""

    behind: dict[str, int]
    ends: dict[TopicPartition, int]

    @property
    def caught_up(self) -> bool:
        return not any(self.behind.values())


class Quiescence:
    """Looks at a pipeline's consumer groups through one admin connection (close it)."""

    def __init__(self, s: Settings) -> None:
        self.settings = s
        self._admin: KafkaAdminClient | None = admin_client(s.kafka_bootstrap)

    def close(self) -> None:
        if self._admin is not None:
            self._admin.close()

    def _reconnect(self) -> None:
        self.close()
        self._admin = None
        with contextlib.suppress(ServiceUnavailable):  # the next look says so again
            self._admin = admin_client(self.settings.kafka_bootstrap)

    def __enter__(self) -> Quiescence:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def look(self, include_sink: bool = True) -> Look:
        """Committed offsets against end offsets, for every group of the pipeline."""
        groups = pipeline_groups(self.settings, include_sink)
        parts = range(self.settings.topic_partitions)
        tps = [TopicPartition(t, p) for topics in groups.values() for t in topics for p in parts]
        try:
            if self._admin is None:
                raise OSError("not connected")
            listed: Any = self._admin.list_partition_offsets(dict.fromkeys(tps, OffsetSpec.LATEST))
            ends = {tp: int(o.offset) for tp, o in listed.items()}
            committed: Any = self._admin.list_group_offsets(dict.fromkeys(groups))
        except (KafkaError, OSError) as err:
            raise ServiceUnavailable(
                f"Kafka at {self.settings.kafka_bootstrap} stopped answering while waiting for "
                f"the pipeline ({type(err).__name__})"
            ) from None
        behind: dict[str, int] = {}
        for group, topics in groups.items():
            done = committed.get(group, {})
            behind[group] = sum(
                end - committed_or_zero(done[tp].offset if tp in done else None)
                for tp, end in ends.items()
                if tp.topic in topics and end > 0
            )
        return Look(behind, ends)

    def quiet(self, include_sink: bool = True) -> bool:
        """Two looks in a row find every group at the end, and the ends did not move."""
        first = self.look(include_sink)
        if not first.caught_up:
            return False
        second = self.look(include_sink)
        return second.caught_up and second.ends == first.ends

    def wait(
        self,
        timeout_s: float,
        *,
        include_sink: bool = True,
        interval_s: float = 0.25,
        check: Callable[[], None] | None = None,
        on_look: Callable[[Look], None] | None = None,
    ) -> None:
        """Block until :meth:`quiet`, or raise :class:`NotQuiet` after ``timeout_s``.

        ``check`` runs before each look and may raise (a worker that died will never catch
        up); ``on_look`` sees each look, to show how far behind the pipeline is.
        """
        deadline = time.monotonic() + timeout_s
        previous: Look | None = None
        while True:
            if check is not None:
                check()
            try:
                now = self.look(include_sink)
            except ServiceUnavailable as err:
                # A broker restart is weathered by the workers; wait for it too.
                if time.monotonic() >= deadline:
                    raise NotQuiet(
                        f"the pipeline did not catch up within {timeout_s:.0f}s: {err}"
                    ) from None
                previous = None
                self._reconnect()
                time.sleep(1.0)
                continue
            settled = previous is not None and previous.caught_up and previous.ends == now.ends
            if now.caught_up and settled:
                return
            if on_look is not None:
                on_look(now)
            if time.monotonic() >= deadline:
                behind = ", ".join(f"{g}: {n:,}" for g, n in now.behind.items())
                raise NotQuiet(
                    f"the pipeline did not catch up within {timeout_s:.0f}s "
                    f"(messages not yet committed: {behind})"
                )
            previous = now
            if not now.caught_up:  # caught up: look again at once, to confirm
                time.sleep(interval_s)
