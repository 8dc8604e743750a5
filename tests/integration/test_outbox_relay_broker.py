"""The outbox relay against the real local broker: order, crash recovery, the lease."""

from __future__ import annotations

import asyncio
import random
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime, timedelta

import pytest
from aiokafka import AIOKafkaProducer
from faststream.kafka import KafkaBroker

from operations.localbroker import LocalBroker
from shared.contracts.events import OrderShipped, default_registry
from shared.kernel.clock import FakeClock
from shared.kernel.events.envelope import DomainEvent, Envelope
from shared.kernel.eventstore.memory import InMemoryEventStore
from shared.kernel.eventstore.port import Fence, NewCommit
from shared.kernel.messaging import make_kafka_broker, make_producer, subscribe_events
from shared.kernel.outbox import OutboxRelay, republish
from shared.kernel.settings import Settings
from tests.conftest import FAST_GROUP_OPTIONS, eventually, read_records

pytestmark = pytest.mark.broker

NOW = datetime(2026, 3, 1, tzinfo=UTC)


def shipped(order_id: str, version: int, topic: str, events: int = 1) -> NewCommit:
    envelopes = [
        Envelope.of(
            OrderShipped(order_id=order_id, seller_id="s-1", tracking_number=f"v{v}"),
            stream_id=f"order-{order_id}",
            stream_version=v,
            occurred_at=NOW,
            producer="order",
            correlation_id=order_id,
            causation_id=None,
        )
        for v in range(version, version + events)
    ]
    return NewCommit(
        stream_id=f"order-{order_id}",
        expected_version=version - 1,
        events=envelopes,
        topic=topic,
        partition_key=order_id,
    )


async def fill(store: InMemoryEventStore, topic: str, streams: int, commits: int) -> int:
    """Interleave `commits` commits of 1-3 events over `streams` streams; return the events."""
    versions = {f"o{n}": 1 for n in range(streams)}
    rng = random.Random(7)
    total = 0
    for _ in range(commits):
        order_id = rng.choice(sorted(versions))
        size = rng.randint(1, 3)
        await store.append(shipped(order_id, versions[order_id], topic, size))
        versions[order_id] += size
        total += size
    return total


@pytest.fixture
def settings(kafka: LocalBroker) -> Settings:
    return Settings(broker_url=kafka.bootstrap_servers, kafka_idempotence=False)


@pytest.fixture
async def producer(settings: Settings) -> AsyncIterator[AIOKafkaProducer]:
    producer = make_producer(settings)
    await producer.start()
    yield producer
    await producer.stop()


def versions_by_key(records: Sequence[object]) -> dict[bytes, list[int]]:
    by_key: dict[bytes, list[int]] = defaultdict(list)
    for record in records:
        envelope = Envelope.model_validate_json(record.value)  # type: ignore[attr-defined]
        by_key[record.key].append(envelope.stream_version)  # type: ignore[attr-defined]
    return by_key


async def test_relay_publishes_everything_stored_in_per_stream_order(
    kafka: LocalBroker, producer: AIOKafkaProducer, unique_name: Callable[[str], str]
) -> None:
    topic = unique_name("order.events")
    await kafka.create_topics([topic])
    store = InMemoryEventStore()
    total = await fill(store, topic, streams=12, commits=150)
    relay = OutboxRelay(store, producer, FakeClock(NOW), owner="r1", batch_size=40)

    published = 0
    while count := await relay.run_once():
        published += count

    assert published == total
    assert await store.unpublished() == []
    records = await read_records(kafka.bootstrap_servers, topic, total, settle_s=0.3)
    assert len(records) == total
    for key, versions in versions_by_key(records).items():
        assert versions == list(range(1, len(versions) + 1)), f"stream {key!r} out of order"
    assert {r.headers[0] for r in records} == {("event_type", b"OrderShipped")}


class CrashBeforeMark(InMemoryEventStore):
    """A store whose process 'dies' after the broker acked but before the outbox was marked."""

    crash = True

    async def mark_published(self, positions: Sequence[int], fence: Fence | None = None) -> None:
        if self.crash:
            raise ConnectionAbortedError("relay process killed")
        await super().mark_published(positions, fence)


async def test_relay_restarted_after_a_crash_republishes_and_the_effect_happens_once(
    kafka: LocalBroker,
    settings: Settings,
    producer: AIOKafkaProducer,
    unique_name: Callable[[str], str],
) -> None:
    topic = unique_name("order.events")
    await kafka.create_topics([topic])
    store = CrashBeforeMark()
    for n in range(5):
        await store.append(shipped(f"o{n}", 1, topic))
    clock = FakeClock(NOW)
    lease = timedelta(seconds=30)

    with pytest.raises(ConnectionAbortedError):
        await OutboxRelay(store, producer, clock, owner="replica-1", lease_ttl=lease).run_once()
    assert len(await store.unpublished()) == 5

    store.crash = False
    clock.advance(lease + timedelta(seconds=1))  # the dead relay's lease runs out
    assert await OutboxRelay(store, producer, clock, "replica-2", lease_ttl=lease).run_once() == 5
    assert await store.unpublished() == []
    records = await read_records(kafka.bootstrap_servers, topic, 10, settle_s=0.3)
    assert len(records) == 10  # every event twice on the wire

    effects = InMemoryEventStore()

    async def record_effect(envelope: Envelope, event: DomainEvent) -> None:
        await effects.append(
            NewCommit(
                stream_id=f"effect-{envelope.stream_id}",
                expected_version=0,
                events=[
                    envelope.model_copy(
                        update={
                            "event_id": f"effect-of-{envelope.event_id}",
                            "stream_id": f"effect-{envelope.stream_id}",
                            "causation_id": envelope.event_id,
                        }
                    )
                ],
                topic="effects",
                partition_key=envelope.correlation_id,
                causation_id=envelope.event_id,
            )
        )

    broker = make_kafka_broker(settings, graceful_timeout_s=1)
    consumer = subscribe_events(
        broker,
        topic,
        group_id=unique_name("g"),
        handler=record_effect,
        registry=default_registry(),
        **FAST_GROUP_OPTIONS,
    )
    async with broker:
        await broker.start()
        await eventually(
            lambda: consumer.metrics.processed + consumer.metrics.duplicates == 10,
            what="all ten deliveries handled",
        )
    assert (consumer.metrics.processed, consumer.metrics.duplicates) == (5, 5)
    assert len([c async for c in effects.read_all()]) == 5


async def test_of_two_relays_on_one_store_only_the_lease_holder_publishes(
    kafka: LocalBroker, settings: Settings, unique_name: Callable[[str], str]
) -> None:
    topic = unique_name("order.events")
    await kafka.create_topics([topic])
    store = InMemoryEventStore()
    clock = FakeClock(NOW)
    stop = asyncio.Event()
    producers = [make_producer(settings), make_producer(settings)]
    for each in producers:
        await each.start()
    relays = [
        OutboxRelay(store, each, clock, owner=f"replica-{n}") for n, each in enumerate(producers)
    ]
    loops = [asyncio.create_task(relay.run(0.005, stop)) for relay in relays]
    try:
        total = 0
        for n in range(30):
            await store.append(shipped(f"o{n % 4}", n // 4 + 1, topic))
            total += 1
            await asyncio.sleep(0.005)
        await eventually(
            lambda: sum(r.metrics.published for r in relays) >= total, what="all published"
        )
    finally:
        stop.set()
        await asyncio.gather(*loops)
        for each in producers:
            await each.stop()

    publishers = [r for r in relays if r.metrics.published]
    assert len(publishers) == 1
    assert sum(r.metrics.runs_without_lease for r in relays) > 0
    records = await read_records(kafka.bootstrap_servers, topic, total, settle_s=0.3)
    assert len(records) == total  # nothing sent twice


async def test_republish_re_emits_every_stored_event_through_a_faststream_broker(
    kafka: LocalBroker, settings: Settings, unique_name: Callable[[str], str]
) -> None:
    topic = unique_name("order.events")
    await kafka.create_topics([topic])
    store = InMemoryEventStore()
    total = await fill(store, topic, streams=3, commits=10)
    await store.mark_published([c.position async for c in store.read_all()])

    broker: KafkaBroker = make_kafka_broker(settings)
    async with broker:
        await broker.connect()
        assert await republish(store, broker) == total

    records = await read_records(kafka.bootstrap_servers, topic, total, settle_s=0.3)
    for versions in versions_by_key(records).values():
        assert versions == list(range(1, len(versions) + 1))
