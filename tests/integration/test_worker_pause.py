"""A worker frozen past its session timeout must not write after its partitions' new owner.

SIGSTOP stands for what freezes a process in production: a VM or container paused, a
CPU quota exhausted, the event loop held by one long step. Thawed, the worker's freeze
fence stops it before any produce request leaves (pipeline/watchdog.py, FreezeFence)."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from pipeline.transport import fence_produce_requests
from tests.integration import stack
from tests.integration.pipeline_env import PipelineEnv, read_messages


class Frozen(Exception):
    pass


def test_a_produce_request_after_the_fence_tripped_never_reaches_kafka(penv: PipelineEnv) -> None:
    bootstrap = penv.settings().kafka_bootstrap
    topic = stack.create_topic(f"{penv.name}.fenced", partitions=1, bootstrap=bootstrap)
    frozen = False
    checked = 0

    def check() -> None:
        nonlocal checked
        checked += 1
        if frozen:
            raise Frozen  # the worker's fence exits the process here

    async def main() -> None:
        nonlocal frozen
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
        await producer.start()
        try:
            fence_produce_requests(producer.client, check)
            await (await producer.send(topic, b"before the freeze"))
            frozen = True
            with pytest.raises(KafkaError):
                await (await producer.send(topic, b"after the freeze"))
        finally:
            await producer.stop()

    asyncio.run(main())
    assert checked == 2
    on_the_topic = [m.value for m in read_messages(bootstrap, topic, 1)]
    assert on_the_topic == [b"before the freeze"]
