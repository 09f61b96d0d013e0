"""The watermark ingest announces: event-time progress whose consequences have been processed.

The domain core's contract (docs/domain.md) is that when a step sees watermark ``W``, the
messages caused by events older than ``W`` have been delivered. Announcing the raw progress
of ingest breaks it when a backlog is read fast: ingest runs days of event time ahead while
the messages between the state agents (user ↔ share ↔ sharer) still queue, and a state
agent that already moved on expires history those messages need.

So ingest announces progress only once its consequences are through, judged from Kafka's own
bookkeeping rather than from any agent's memory (several workers may share the work):

1. every poll, ingest takes the progress of what it has *published* so far, and the end
   offsets of the ``by-*`` topics (which then include those envelopes);
2. when the group's committed offsets reach those ends, everything published before them
   has been processed, and whatever that caused is in the topics: take the ends again;
3. after ``hops`` such rounds, every message up to ``hops`` steps down a causal chain
   (event → user → share → user → sharer → user, or down a chain of re-shares) has been
   processed, and the progress is announced.

Under live load this delays the watermark by a few commit intervals (seconds); reading a
backlog, it keeps every state agent's watermark behind what the others still have to say.
A causal chain longer than ``hops`` (a re-share chain deeper than ``hops`` minus three)
could still be overtaken; ``SIYU_WATERMARK_HOPS`` raises the bound.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

Partition = tuple[str, int]


@dataclass
class _Round:
    progress: dict[int, int]
    target: dict[Partition, int]
    hops_left: int


@dataclass
class ConfirmedProgress:
    """Per events partition, the progress whose consequences have been processed."""

    hops: int
    confirmed: dict[int, int] = field(default_factory=dict)
    _rounds: list[_Round] = field(default_factory=list)
    _last_started: dict[int, int] | None = None

    def observe(
        self,
        published: Mapping[int, int],
        committed: Mapping[Partition, int | None],
        ends: Mapping[Partition, int],
    ) -> dict[int, int]:
        """One poll: ``published`` is ingest's progress over what Kafka confirmed before the
        offsets were read; ``committed`` and ``ends`` are the group's committed offsets and
        the end offsets of every partition of the ``by-*`` topics. Returns the confirmed
        progress (also in :attr:`confirmed`)."""
        kept: list[_Round] = []
        for r in self._rounds:
            if all(_offset(committed.get(tp)) >= end for tp, end in r.target.items()):
                r.hops_left -= 1
                if r.hops_left == 0:
                    for p, t in r.progress.items():
                        if t > self.confirmed.get(p, t - 1):
                            self.confirmed[p] = t
                    continue
                r.target = dict(ends)
            kept.append(r)
        self._rounds = kept
        if published and published != self._last_started:
            self._rounds.append(_Round(dict(published), dict(ends), self.hops))
            self._last_started = dict(published)
        return self.confirmed


def _offset(committed: int | None) -> int:
    """A committed offset, with "never committed" (None or -1) as 0."""
    return committed if committed is not None and committed >= 0 else 0
