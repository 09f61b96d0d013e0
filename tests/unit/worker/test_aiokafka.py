"""pipeline/worker/faust/aiokafka.py: a fetched message is delivered at once when nothing has to
wait, and a delivery that waits behaves as in Faust's race (finishes, or is abandoned when the
flow is suspended); the consumer's calls run on the worker's own loop. The consumer is the
app's real one; nothing connects to Kafka (tests/integration/test_consumer_loop.py does)."""

from __future__ import annotations

import asyncio
import gc
import threading
import warnings
from pathlib import Path
from typing import Any

import pytest

from pipeline.settings import load_settings
from pipeline.worker.app import create_app
from pipeline.worker.faust.aiokafka import Consumer, _go_on


def consumer(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
    monkeypatch.setenv("SIYU_DATA_DIR", str(tmp_path))
    c = create_app(load_settings()).consumer
    assert isinstance(c, Consumer)
    return c


def full_queue() -> asyncio.Queue[int]:
    """A queue of one place, taken by 1: a put waits until someone gets."""
    queue: asyncio.Queue[int] = asyncio.Queue(maxsize=1)
    queue.put_nowait(1)
    return queue


def test_a_delivery_that_need_not_wait_runs_at_once_and_leaves_no_task(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    delivered: list[int] = []

    async def deliver(n: int) -> int:
        delivered.append(n)
        return n * 2

    async def main() -> None:
        c = consumer(monkeypatch, tmp_path)
        tasks = len(asyncio.all_tasks())
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # "coroutine ... was never awaited" would fail
            waiting = c.wait_first(deliver(1), c.suspend_flow.wait())
            # It finishes in its first step: no task, no turn of the event loop.
            with pytest.raises(StopIteration) as finished:
                waiting.send(None)
            gc.collect()
        result = finished.value.value
        assert result.results == [2] and not result.stopped
        assert delivered == [1]
        assert len(asyncio.all_tasks()) == tasks

    asyncio.run(main())


def test_a_delivery_into_a_full_queue_waits_for_room_then_finishes(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    async def main() -> None:
        c, queue = consumer(monkeypatch, tmp_path), full_queue()
        steps: list[str] = []

        async def deliver() -> str:
            steps.append("start")
            await queue.put(2)  # full: waits until the reader below takes 1
            await asyncio.sleep(0)  # a bare yield on the way
            steps.append("put")
            return "done"

        async def reader() -> list[int]:
            await asyncio.sleep(0.05)
            return [await queue.get(), await queue.get()]

        read = asyncio.ensure_future(reader())
        result = await c.wait_first(deliver(), c.suspend_flow.wait())
        assert result.results == ["done"]
        assert steps == ["start", "put"]
        assert await read == [1, 2]

    asyncio.run(main())


def test_a_waiting_delivery_is_abandoned_when_the_flow_is_suspended(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    async def main() -> None:
        c, queue = consumer(monkeypatch, tmp_path), full_queue()
        seen: list[str] = []

        async def deliver() -> None:
            try:
                await queue.put(2)
            except asyncio.CancelledError:
                seen.append("cancelled")
                raise
            seen.append("put")

        async def rebalance() -> None:
            await asyncio.sleep(0.05)
            c.suspend_flow.set()

        suspending = asyncio.ensure_future(rebalance())
        await c.wait_first(deliver(), c.suspend_flow.wait())
        await suspending
        await asyncio.sleep(0.01)  # the abandoned delivery's cancellation runs
        assert seen == ["cancelled"]
        assert queue.qsize() == 1 and queue.get_nowait() == 1

    asyncio.run(main())


def test_a_delivery_that_fails_raises_from_wait_first(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    async def deliver() -> None:
        raise ValueError("undecodable")

    async def main() -> None:
        c = consumer(monkeypatch, tmp_path)
        with pytest.raises(ValueError, match="undecodable"):
            await c.wait_first(deliver(), c.suspend_flow.wait())

    asyncio.run(main())


def test_a_delivery_cancelled_as_its_wait_ends_stops_as_a_task_would() -> None:
    """The flow is suspended in the same turn as the delivery's wait ends: a task would be
    cancelled at that point, not go on and put a message after the suspension."""
    went_on: list[bool] = []

    async def deliver(room: asyncio.Future[None]) -> None:
        await room
        went_on.append(True)

    async def main() -> None:
        room: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        delivery = deliver(room)
        waiting = delivery.send(None)  # it waits for room
        task = asyncio.ensure_future(_go_on(delivery, waiting))
        await asyncio.sleep(0)  # the task now waits for room too
        room.set_result(None)
        task.cancel()  # before the task runs again
        with pytest.raises(asyncio.CancelledError):
            await task
        assert went_on == []

    asyncio.run(main())


def test_a_wait_that_fails_raises_inside_the_delivery_where_it_waited() -> None:
    seen: list[str] = []

    async def deliver(room: asyncio.Future[None]) -> str:
        try:
            await room
        except ValueError as err:
            seen.append(str(err))
            return "handled"
        return "not raised"

    async def main() -> None:
        room: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        delivery = deliver(room)
        waiting = delivery.send(None)
        task = asyncio.ensure_future(_go_on(delivery, waiting))
        await asyncio.sleep(0)
        room.set_exception(ValueError("no room"))
        assert await task == "handled"
        assert seen == ["no room"]

    asyncio.run(main())


def test_a_consumer_call_runs_where_it_is_awaited_with_nothing_started(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Faust hands each call to the consumer's own thread through a queue, answered only
    # once that thread runs; siyu's consumer runs on the worker's loop, so a call is a
    # plain await, of a coroutine function or a plain one.
    seen: list[tuple[int, asyncio.AbstractEventLoop]] = []

    async def fetch(n: int) -> int:
        seen.append((threading.get_ident(), asyncio.get_running_loop()))
        return n + 1

    def position(n: int) -> int:
        seen.append((threading.get_ident(), asyncio.get_running_loop()))
        return n * 10

    async def main() -> None:
        thread = consumer(monkeypatch, tmp_path)._thread
        assert await asyncio.wait_for(thread.call_thread(fetch, 1), 5) == 2
        assert await asyncio.wait_for(thread.call_thread(position, n=3), 5) == 30
        # A cast is not awaited: it runs as a task of this loop.
        await asyncio.wait_for(thread.cast_thread(fetch, 5), 5)

        async def cast_ran() -> None:
            while len(seen) < 3:
                await asyncio.sleep(0.01)

        await asyncio.wait_for(cast_ran(), 5)
        here = (threading.get_ident(), asyncio.get_running_loop())
        assert seen == [here, here, here]
        assert thread.thread_loop is asyncio.get_running_loop()

    asyncio.run(main())


def test_the_workers_producer_asks_its_freeze_fence_before_a_produce_request(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The wiring: the app's producer's client is fenced by the app's fence. The fenced
    request never reaches the client's own send (which would try to connect)."""
    from aiokafka.protocol.produce import ProduceRequest

    class Frozen(Exception):
        pass

    def stop(frozen_s: float, limit_s: float) -> None:
        raise Frozen(frozen_s, limit_s)

    async def main() -> None:
        monkeypatch.setenv("SIYU_DATA_DIR", str(tmp_path))
        app = create_app(load_settings())
        fence = app.freeze_fence
        assert fence.limit_s == load_settings().session_timeout_s / 2
        now = [0.0]
        fence.clock, fence.on_frozen = (lambda: now[0]), stop
        client = app.producer._new_producer().client  # the aiokafka producer, not started
        fence.arm()
        fence.awake()
        now[0] = 60.0
        produce = ProduceRequest(required_acks=-1, timeout=1, topics=[], transactional_id=None)
        with pytest.raises(Frozen) as stopped:
            await client.send(0, produce)
        assert stopped.value.args == (60.0, fence.limit_s)

    asyncio.run(main())
