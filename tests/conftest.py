"""Fixtures shared by every test suite. Keep this generic: suite-specific fixtures live with
their tests.

Broker tests (marker `broker`) share one local Tansu broker per session and isolate
themselves by unique topic and group names, never by restarting the broker.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from hypothesis import settings as hypothesis_settings

from operations.localbroker import LocalBroker

# Property tests judge behaviour, not speed: no per-example deadline (a loaded CI machine must
# not turn a slow example into a failure).
hypothesis_settings.register_profile("yellowcart", deadline=None)
hypothesis_settings.load_profile("yellowcart")

# Tansu answers a consumer group's join after about half the session timeout: short
# sessions keep each test's group join near one second.
FAST_GROUP_OPTIONS: dict[str, Any] = {"session_timeout_ms": 2000, "heartbeat_interval_ms": 300}

Records = list[ConsumerRecord[bytes, bytes]]


@pytest.fixture(scope="session")
def kafka() -> Iterator[LocalBroker]:
    """One local Kafka-protocol broker for the whole session."""
    broker = LocalBroker()
    broker.start_sync()
    try:
        yield broker
    finally:
        broker.stop_sync()


@pytest.fixture
def unique_name(request: pytest.FixtureRequest) -> Callable[[str], str]:
    """`unique_name("orders")` -> `orders.<test name>.<random>`: a topic or group of its own."""
    test_name = re.sub(r"[^A-Za-z0-9]+", "-", request.node.name)[-60:].strip("-")

    def make(prefix: str = "t") -> str:
        return f"{prefix}.{test_name}.{uuid.uuid4().hex[:8]}"

    return make


async def read_records(
    bootstrap_servers: str,
    topic: str,
    count: int,
    *,
    timeout_s: float = 15.0,
    settle_s: float = 0.0,
) -> Records:
    """Read a topic from the beginning, without a consumer group, until `count` records.

    Fails when fewer arrive before the deadline. With `settle_s`, keeps reading that long
    after reaching `count`, so a test can also see records that should not be there.
    """
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap_servers, enable_auto_commit=False, group_id=None
    )
    await consumer.start()
    try:
        partitions = await _partitions_of(consumer, topic, timeout_s)
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        records: Records = []
        deadline = time.monotonic() + timeout_s
        settle_until: float | None = None
        while time.monotonic() < (settle_until or deadline):
            batch = await consumer.getmany(timeout_ms=100)
            for partition_records in batch.values():
                records.extend(partition_records)
            if settle_until is None and len(records) >= count:
                if settle_s <= 0:
                    break
                settle_until = time.monotonic() + settle_s
        if len(records) < count:
            raise AssertionError(f"{topic}: expected {count} records, got {len(records)}")
        return records
    finally:
        await consumer.stop()


async def _partitions_of(
    consumer: AIOKafkaConsumer, topic: str, timeout_s: float
) -> list[TopicPartition]:
    deadline = time.monotonic() + timeout_s
    while True:
        numbers = consumer.partitions_for_topic(topic)
        if numbers:
            return [TopicPartition(topic, number) for number in sorted(numbers)]
        if time.monotonic() > deadline:
            raise AssertionError(f"topic {topic} does not exist")
        await consumer.topics()  # refreshes metadata
        await asyncio.sleep(0.05)


async def committed_offsets(bootstrap_servers: str, group_id: str, topic: str) -> dict[int, int]:
    """The group's committed offset per partition of `topic` (absent: nothing committed).

    Asks as a consumer of the group that never joins it (OffsetFetch only): aiokafka's admin
    client cannot decode Tansu's answer to ListConsumerGroupOffsets.
    """
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap_servers, group_id=group_id, enable_auto_commit=False
    )
    await consumer.start()
    try:
        partitions = await _partitions_of(consumer, topic, timeout_s=5.0)
        offsets = {tp.partition: await consumer.committed(tp) for tp in partitions}
    finally:
        await consumer.stop()
    return {partition: offset for partition, offset in offsets.items() if offset is not None}


async def eventually(
    check: Callable[[], bool | Awaitable[bool]], *, timeout_s: float = 15.0, what: str = ""
) -> None:
    """Poll `check` until it holds; fail with `what` at the deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        outcome = check()
        if isinstance(outcome, Awaitable):
            outcome = await outcome
        if outcome:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what or check}")
        await asyncio.sleep(0.05)
