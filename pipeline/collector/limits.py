"""Bounded work in flight: the collector sheds load instead of buffering without bound.

A request takes a :class:`Ticket` for its body size before the body is read, and gives it
back only when Kafka has settled every message sent for it (confirmed or failed), which
may be after the response when Kafka was too slow to answer in time. So what the process
holds, read bodies plus messages still in the producer, stays under the limits however
slow Kafka is; a request that does not fit is answered at once (429 or 503).
"""

from __future__ import annotations


class Gate:
    """Counts requests and bytes in flight against their limits (one event loop, no locks)."""

    def __init__(self, max_requests: int, max_bytes: int) -> None:
        self.max_requests = max_requests
        self.max_bytes = max_bytes
        self.requests = 0
        self.bytes = 0

    def try_acquire(self, nbytes: int) -> Ticket | None:
        """A ticket for ``nbytes``, or None when it does not fit now.

        A body larger than the byte limit alone is let in when nothing else is in flight,
        so a mis-set limit slows the collector down rather than refusing it forever.
        """
        if self.requests >= self.max_requests:
            return None
        if self.bytes and self.bytes + nbytes > self.max_bytes:
            return None
        self.requests += 1
        self.bytes += nbytes
        return Ticket(self, nbytes)


class Ticket:
    """One request's share of a :class:`Gate`; :meth:`release` is safe to call twice."""

    def __init__(self, gate: Gate, nbytes: int) -> None:
        self._gate = gate
        self.nbytes = nbytes
        self._held = True

    def shrink(self, nbytes: int) -> None:
        """Hold only ``nbytes`` (the body turned out smaller than reserved)."""
        if self._held and nbytes < self.nbytes:
            self._gate.bytes -= self.nbytes - nbytes
            self.nbytes = nbytes

    def release(self) -> None:
        if self._held:
            self._held = False
            self._gate.requests -= 1
            self._gate.bytes -= self.nbytes
