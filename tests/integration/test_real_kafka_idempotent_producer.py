"""The kernel's producer with the idempotent producer on, as compose and Kubernetes run it,
against a real Kafka (compose's image, testcontainers). The local Tansu broker does not
implement idempotence, so only this test exercises that path; it skips where no Docker
daemon answers."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from shared.kernel.messaging.kafka import make_producer
from shared.kernel.settings import Settings
from tests.containers import NO_DOCKER, docker_answers, kafka_broker

pytestmark = [pytest.mark.docker, pytest.mark.slow]


@pytest.fixture(scope="module")
def real_kafka() -> Iterator[str]:
    if not docker_answers():
        pytest.skip(NO_DOCKER)
    with kafka_broker() as bootstrap:
        yield bootstrap


async def test_idempotent_producer_delivers_each_record_once_in_order(real_kafka: str) -> None:
    topic = "order.events"
    admin = AIOKafkaAdminClient(bootstrap_servers=real_kafka)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=4, replication_factor=1)])
    finally:
        await admin.close()

    settings = Settings(broker_url=real_kafka, kafka_idempotence=True)
    producer = make_producer(settings)
    await producer.start()
    try:
        assert producer._txn_manager is not None, "idempotence must be on"
        pending = [
            await producer.send(topic, f"event-{n}".encode(), key=b"ord-1") for n in range(300)
        ]
        await asyncio.gather(*pending)
        assert producer._txn_manager.producer_id >= 0  # the broker granted a producer id
    finally:
        await producer.stop()

    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=real_kafka, auto_offset_reset="earliest", group_id="test.read"
    )
    await consumer.start()
    try:
        received: list[bytes] = []
        async with asyncio.timeout(30):
            while len(received) < 300:
                batch = await consumer.getmany(timeout_ms=1000)
                received += [record.value for records in batch.values() for record in records]
        extra = await consumer.getmany(timeout_ms=1000)
    finally:
        await consumer.stop()
    assert received == [f"event-{n}".encode() for n in range(300)]
    assert not any(extra.values()), "no duplicate after the last record"
