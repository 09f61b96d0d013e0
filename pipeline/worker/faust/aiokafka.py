"""Faust's Kafka consumer, made cheaper per message and per fetch.

Two costs of Faust's aiokafka consumer that siyu's workers paid without gain.

**A race of four tasks per message.**
Faust's consumer hands each fetched message to the conductor (which puts it into the
queue of every channel reading its topic) by racing the delivery against a suspension of
the flow (a rebalance), a stop and a crash: ``wait_first`` makes four tasks, waits for
the first to finish and cancels the other three. That was a measurable
share of a worker's CPU per message (docs/performance.md), and almost every delivery finishes
without ever waiting: it only waits when a channel's queue is full or the conductor is
re-subscribing.

siyu's agents read envelopes of many events, so they rarely pay it; but a worker keeping a
standby replica reads every changelog record, one message per key written, about one per
event. :class:`Consumer` runs the delivery at once and only when it has to wait does it
hand the rest of the delivery to Faust's race, so a delivery that waits is still abandoned
on a rebalance, a stop or a crash exactly as before.

**A thread of its own.** Faust runs the aiokafka consumer in a second thread and event
loop, and every fetch is a call handed over to it and an answer handed back.
:class:`SameLoopConsumerThread` runs it on the worker's loop instead.

**A producer a frozen worker cannot use.** :class:`Producer` asks the app's
:class:`~pipeline.worker.watchdog.FreezeFence` before each produce request is written, so a worker
thawed after losing its partitions stops before its writes land after the new owner's.

:class:`App` is ``faust.App`` with all three (:class:`SameLoopConsumer`, :class:`Producer`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import faust
from aiokafka.protocol.produce import ProduceRequest
from faust.transport.drivers import aiokafka as aiokafka_driver
from faust.types import TP
from mode.services import WaitResults
from mode.utils.futures import maybe_async


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


class SameLoopConsumerThread(aiokafka_driver.AIOKafkaConsumerThread):
    """Faust's aiokafka consumer "thread", run on the worker's own event loop.

    Faust runs the aiokafka consumer in a thread of its own, with its own event loop, and
    reaches it through a queue of method calls: every fetch, commit and offset lookup is a
    call handed to that thread and a result handed back, each a wake-up of the other loop.
    Under live traffic a worker fetches many small takes, so the handing over, plus the
    thread's own timers, cost a worker a share of its CPU (docs/performance.md).
    Here the same service runs on the worker's loop and a call is a plain ``await``.

    What the thread bought is that heartbeats go on while the worker's loop is busy; here
    they share that loop, which is why the agents yield between every thousand steps: a
    loop blocked longer than the session timeout (``SIYU_SESSION_TIMEOUT_S``) loses the
    worker's partitions to the others, as a stuck worker should. The worker measures its
    loop's lag (``siyu_event_loop_lag_seconds``, pipeline/worker/watchdog.py) and warns at half
    the session timeout.
    """

    def __init__(self, consumer: Any, *, loop: Any = None, **kwargs: Any) -> None:
        loop = loop or asyncio.get_event_loop()
        super().__init__(consumer, loop=loop, thread_loop=loop, **kwargs)

    async def start(self) -> None:
        # As ServiceThread's thread would (mode.threads.ServiceThread._serve), on this loop.
        self._thread_started.set()
        await self._default_start()

    async def stop(self) -> None:
        # ServiceThread.stop leaves children, futures and exit stacks to its thread's
        # shutdown (which also stops the aiokafka consumer); there is no thread here.
        if not self._started.is_set() or self._stopped.is_set():
            return
        self._stopped.set()
        await self.on_stop()
        if self._consumer is not None:
            await self._consumer.stop()
        await self._default_stop_children()
        self._shutdown.set()
        await self._default_stop_futures()
        await self._default_stop_exit_stacks()
        await self.on_shutdown()

    async def call_thread(self, fun: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return await maybe_async(fun(*args, **kwargs))

    async def cast_thread(self, fun: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        result = fun(*args, **kwargs)
        if asyncio.iscoroutine(result):
            self.add_future(result)

    async def on_partitions_revoked(self, revoked: set[TP]) -> None:
        await self.consumer.on_partitions_revoked(revoked)

    async def on_partitions_assigned(self, assigned: set[TP], generation_id: int = 0) -> None:
        await self.consumer.on_partitions_assigned(assigned, generation_id)


class SameLoopConsumer(Consumer):
    """:class:`Consumer` whose aiokafka consumer runs on the worker's loop."""

    def _new_consumer_thread(self) -> Any:
        return SameLoopConsumerThread(self, loop=self.loop, beacon=self.beacon)


def fence_produce_requests(client: Any, check: Callable[[], None]) -> None:
    """Make ``client`` (an ``aiokafka`` client) call ``check`` before it sends each produce
    request. ``check`` raises (or exits) to stop the request. Between the check and the
    request's bytes going to the socket, the client does not yield to the loop while it is
    connected: no other task can run, nor hold the loop, in between."""
    send = client.send

    async def fenced_send(node_id: Any, request: Any, **kwargs: Any) -> Any:
        if isinstance(request, ProduceRequest):
            check()
        return await send(node_id, request, **kwargs)

    client.send = fenced_send


class Producer(aiokafka_driver.Producer):
    """Faust's producer; its produce requests pass the app's freeze fence, if it has one."""

    def _new_producer(self, transactional_id: Any = None) -> Any:
        producer = super()._new_producer(transactional_id)
        fence = getattr(self.app, "freeze_fence", None)
        if fence is not None:
            fence_produce_requests(producer.client, fence.check)
        return producer


class Transport(aiokafka_driver.Transport):
    Consumer = SameLoopConsumer
    Producer = Producer


class App(faust.App):
    """``faust.App`` whose consumer is :class:`SameLoopConsumer` and producer :class:`Producer`.

    ``freeze_fence``: the worker's :class:`~pipeline.worker.watchdog.FreezeFence`, or None.
    """

    freeze_fence: Any = None

    def _new_transport(self) -> Any:
        return Transport(self.conf.broker_consumer, self)
