"""Handing fetched messages to Faust without a race of four tasks per message.

Faust's consumer hands each fetched message to the conductor (which puts it into the
queue of every channel reading its topic) by racing the delivery against a suspension of
the flow (a rebalance), a stop and a crash: ``wait_first`` makes four tasks, waits for
the first to finish and cancels the other three. That costs about 46 µs of CPU per message
(``bench`` on this machine), and almost every delivery finishes without ever waiting: it
only waits when a channel's queue is full or the conductor is re-subscribing.

siyu's agents read envelopes of many events, so they rarely pay it; but a worker keeping a
standby replica reads every changelog record, one message per key written, about one per
event. :class:`Consumer` runs the delivery at once and only when it has to wait does it
hand the rest of the delivery to Faust's race, so a delivery that waits is still abandoned
on a rebalance, a stop or a crash exactly as before. :class:`App` is ``faust.App`` with
that consumer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

import faust
from faust.transport.drivers import aiokafka as aiokafka_driver
from mode.services import WaitResults


async def _go_on(delivery: Coroutine[Any, Any, Any], waiting: Any) -> Any:
    """Run ``delivery`` on from where it stopped to wait for ``waiting``: as an asyncio task
    would, wait for it, then resume the coroutine, or throw in what ended the wait: the
    future's exception, or a cancellation, even one that came as the future finished (a
    task cancelled then does not go on either)."""
    while True:
        resume: Any
        value: Any
        try:
            if waiting is None:  # a bare yield: the coroutine let the loop run once
                await asyncio.sleep(0)
            else:
                # The coroutine's yield marked the future as awaited; a task clears the mark
                # when it takes the future over, and so does this.
                waiting._asyncio_future_blocking = False
                await waiting
        except BaseException as exc:
            resume, value = delivery.throw, exc
        else:
            resume, value = delivery.send, None
        try:
            waiting = resume(value)
        except StopIteration as done:
            return done.value


class Consumer(aiokafka_driver.Consumer):
    """Faust's aiokafka consumer, delivering a message at once when nothing has to wait."""

    async def wait_first(self, *coros: Any, timeout: Any = None) -> WaitResults:
        # Faust's drain loop calls wait_first(callback(message), self.suspend_flow.wait())
        # for each message; nothing else in the consumer calls it.
        if len(coros) != 2 or timeout is not None or self.suspend_flow.is_set():
            return await super().wait_first(*coros, timeout=timeout)
        delivery, suspended = coros
        if not (asyncio.iscoroutine(delivery) and asyncio.iscoroutine(suspended)):
            return await super().wait_first(*coros)
        try:
            waiting = delivery.send(None)
        except StopIteration as done:
            suspended.close()
            return WaitResults([delivery], [done.value], False)
        except BaseException:
            suspended.close()
            raise
        return await super().wait_first(_go_on(delivery, waiting), suspended)


class Transport(aiokafka_driver.Transport):
    Consumer = Consumer


class App(faust.App):
    """``faust.App`` whose consumer is :class:`Consumer`."""

    def _new_transport(self) -> Any:
        return Transport(self.conf.broker_consumer, self)
