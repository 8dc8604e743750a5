"""The event consumer against the real local broker: retries that skip nothing, the DLQ,
commits that follow the handler, and a group restart that redelivers nothing committed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from operations.localbroker import LocalBroker
from shared.contracts.events import OrderShipped, default_registry
from shared.kernel.events.envelope import DomainEvent, Envelope
from shared.kernel.messaging import (
    EventHandler,
    FastStreamSender,
    RecordSender,
    RetryPolicy,
    dlq_topic,
    make_kafka_broker,
    make_producer,
    subscribe_events,
)
from shared.kernel.messaging.consumer import EventConsumer
from shared.kernel.messaging.kafka import Headers
from shared.kernel.settings import Settings
from tests.conftest import FAST_GROUP_OPTIONS, committed_offsets, eventually, read_records

pytestmark = pytest.mark.broker

NOW = datetime(2026, 3, 1, tzinfo=UTC)
FAST_RETRY = RetryPolicy(attempts=3, first_delay_s=0.01, max_delay_s=0.05)


def shipped(version: int, order_id: str = "o1") -> bytes:
    envelope = Envelope.of(
        OrderShipped(order_id=order_id, seller_id="s-1", tracking_number=f"v{version}"),
        stream_id=f"order-{order_id}",
        stream_version=version,
        occurred_at=NOW,
        producer="order",
        correlation_id=order_id,
        causation_id=None,
    )
    return envelope.model_dump_json().encode()


@pytest.fixture
def settings(kafka: LocalBroker) -> Settings:
    return Settings(broker_url=kafka.bootstrap_servers, kafka_idempotence=False)


@pytest.fixture
async def producer(settings: Settings) -> AsyncIterator[AIOKafkaProducer]:
    producer = make_producer(settings)
    await producer.start()
    yield producer
    await producer.stop()


class Consuming:
    """One consumer-group member running in this process, stopped at the end of the block."""

    def __init__(
        self,
        settings: Settings,
        topic: str,
        group_id: str,
        handler: EventHandler,
        dead_letters: Callable[[Any], RecordSender] | None = None,
    ) -> None:
        self.broker = make_kafka_broker(settings, graceful_timeout_s=1)
        self.consumer: EventConsumer = subscribe_events(
            self.broker,
            topic,
            group_id=group_id,
            handler=handler,
            registry=default_registry(),
            retry=FAST_RETRY,
            dlq_retry=RetryPolicy(first_delay_s=0.05, max_delay_s=0.1),
            dead_letters=dead_letters(self.broker) if dead_letters else None,
            **FAST_GROUP_OPTIONS,
        )

    async def __aenter__(self) -> EventConsumer:
        await self.broker.start()
        return self.consumer

    async def __aexit__(self, *exc: object) -> None:
        await self.broker.stop()


async def produce(producer: AIOKafkaProducer, topic: str, value: bytes, key: bytes = b"o1") -> int:
    metadata = await producer.send_and_wait(topic, value, key=key)
    return int(metadata.offset)


async def test_message_failing_once_is_not_skipped_and_a_restarted_group_redelivers_nothing(
    kafka: LocalBroker,
    settings: Settings,
    producer: AIOKafkaProducer,
    unique_name: Callable[[str], str],
) -> None:
    topic, group = unique_name("order.events"), unique_name("g")
    offsets = [await produce(producer, topic, shipped(v)) for v in range(1, 11)]
    partition = (await producer.send_and_wait(topic, shipped(11), key=b"o1")).partition
    handled: list[int] = []
    failed_once: set[int] = set()

    async def flaky(envelope: Envelope, event: DomainEvent) -> None:
        if envelope.stream_version == 3 and 3 not in failed_once:
            failed_once.add(3)
            raise ConnectionError("store hiccup")
        handled.append(envelope.stream_version)

    async with Consuming(settings, topic, group, flaky) as consumer:
        await eventually(lambda: len(handled) == 11, what="eleven events handled")

        async def committed_to_end() -> bool:
            committed = await committed_offsets(kafka.bootstrap_servers, group, topic)
            return committed.get(partition) == offsets[-1] + 2

        await eventually(committed_to_end, what="the offset to cover every message")
    assert handled == list(range(1, 12))
    assert (consumer.metrics.retried, consumer.metrics.dead_lettered) == (1, 0)

    redelivered: list[int] = []

    async def record(envelope: Envelope, event: DomainEvent) -> None:
        redelivered.append(envelope.stream_version)

    await produce(producer, topic, shipped(12))
    async with Consuming(settings, topic, group, record):
        await eventually(lambda: 12 in redelivered, what="the new event after restart")
    assert redelivered == [12]


async def test_garbage_and_schema_invalid_messages_go_to_the_dlq_and_the_partition_flows_on(
    kafka: LocalBroker,
    settings: Settings,
    producer: AIOKafkaProducer,
    unique_name: Callable[[str], str],
) -> None:
    topic, group = unique_name("order.events"), unique_name("g")
    invalid_payload = Envelope.model_validate_json(shipped(1)).model_copy(
        update={"data": {"order_id": "o1"}}  # seller_id missing
    )
    unknown_type = Envelope.model_validate_json(shipped(2)).model_copy(
        update={"event_type": "OrderTeleported"}
    )
    poison = [
        b"\x89PNG not json",
        b'{"not": "an envelope"}',
        invalid_payload.model_dump_json().encode(),
    ]
    poison_offsets = [await produce(producer, topic, value) for value in poison]
    await produce(producer, topic, unknown_type.model_dump_json().encode())
    await produce(producer, topic, shipped(3))
    handled: list[int] = []

    async def handle(envelope: Envelope, event: DomainEvent) -> None:
        handled.append(envelope.stream_version)

    async with Consuming(settings, topic, group, handle) as consumer:
        await eventually(lambda: handled == [3], what="the valid event after the poison")
    assert consumer.metrics.dead_lettered == 3
    assert consumer.metrics.unknown_types == 1

    letters = await read_records(kafka.bootstrap_servers, dlq_topic(topic), 3, settle_s=0.3)
    assert sorted(r.value for r in letters) == sorted(poison)
    for letter in letters:
        headers = dict(letter.headers)
        assert letter.key == b"o1"
        assert headers["source_topic"] == topic.encode()
        assert int(headers["source_offset"]) in poison_offsets
        assert headers["attempts"] == b"0"
        assert headers["error"]
        assert headers["error_type"] == b"ValidationError"
        assert headers["failed_at"].endswith(b"Z")
    reasons = {dict(r.headers)["error_reason"] for r in letters}
    assert reasons == {b"invalid_envelope", b"invalid_payload"}


async def test_handler_that_always_fails_ends_in_the_dlq_after_bounded_attempts(
    kafka: LocalBroker,
    settings: Settings,
    producer: AIOKafkaProducer,
    unique_name: Callable[[str], str],
) -> None:
    topic, group = unique_name("order.events"), unique_name("g")
    await produce(producer, topic, shipped(1))
    await produce(producer, topic, shipped(2))
    calls: list[int] = []

    async def broken_on_first(envelope: Envelope, event: DomainEvent) -> None:
        calls.append(envelope.stream_version)
        if envelope.stream_version == 1:
            raise RuntimeError("cannot handle v1")

    async with Consuming(settings, topic, group, broken_on_first) as consumer:
        await eventually(lambda: 2 in calls, what="the next event to be handled")
    assert calls == [1, 1, 1, 2]
    assert consumer.metrics.retried == 2
    [letter] = await read_records(kafka.bootstrap_servers, dlq_topic(topic), 1, settle_s=0.3)
    headers = dict(letter.headers)
    assert headers["attempts"] == b"3"
    assert headers["error"] == b"RuntimeError: cannot handle v1"
    assert headers["error_reason"] == b"handler_failed"
    assert Envelope.model_validate_json(letter.value).stream_version == 1


class GatedSender:
    """A DLQ publisher that fails until the gate opens."""

    def __init__(self, inner: RecordSender) -> None:
        self.inner = inner
        self.gate = asyncio.Event()
        self.refused = 0

    async def send(
        self, topic: str, value: bytes, *, key: bytes | None, headers: Headers
    ) -> asyncio.Future[Any]:
        if not self.gate.is_set():
            self.refused += 1
            raise ConnectionError("DLQ unreachable")
        return await self.inner.send(topic, value, key=key, headers=headers)


async def test_a_message_whose_dlq_publish_fails_is_not_committed_until_it_succeeds(
    kafka: LocalBroker,
    settings: Settings,
    producer: AIOKafkaProducer,
    unique_name: Callable[[str], str],
) -> None:
    topic, group = unique_name("order.events"), unique_name("g")
    metadata = await producer.send_and_wait(topic, b"garbage", key=b"o1")
    last = await produce(producer, topic, shipped(1))
    handled: list[int] = []
    gated: list[GatedSender] = []

    def gated_dlq(broker: Any) -> RecordSender:
        gated.append(GatedSender(FastStreamSender(broker)))
        return gated[0]

    async def handle(envelope: Envelope, event: DomainEvent) -> None:
        handled.append(envelope.stream_version)

    async with Consuming(settings, topic, group, handle, dead_letters=gated_dlq) as consumer:
        await eventually(lambda: gated[0].refused >= 3, what="DLQ publish attempts")
        committed = await committed_offsets(kafka.bootstrap_servers, group, topic)
        assert committed.get(metadata.partition, 0) <= metadata.offset
        assert handled == []

        gated[0].gate.set()
        await eventually(lambda: handled == [1], what="the event after the poison")

        async def all_committed() -> bool:
            committed = await committed_offsets(kafka.bootstrap_servers, group, topic)
            return committed.get(metadata.partition) == last + 1

        await eventually(all_committed, what="the commit after the DLQ publish")
    assert consumer.metrics.dead_lettered == 1
    assert consumer.metrics.dlq_publish_failures >= 3
