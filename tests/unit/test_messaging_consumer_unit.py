"""The pure parts of the event consumer: backoff, DLQ headers, and the per-record decisions
(handle, retry, dead-letter, commit) driven with a fake sender and a fake commit."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import pytest
from aiokafka import ConsumerRecord, TopicPartition

from shared.contracts.events import OrderShipped, default_registry
from shared.kernel.clock import FakeClock
from shared.kernel.events.envelope import DomainEvent, Envelope
from shared.kernel.eventstore.port import DuplicateCausation
from shared.kernel.messaging.consumer import EventConsumer, RetryPolicy, dead_letter_headers
from shared.kernel.messaging.kafka import Headers

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def test_backoff_doubles_from_the_first_delay_up_to_the_cap() -> None:
    policy = RetryPolicy(attempts=8, first_delay_s=0.05, max_delay_s=2.0)
    assert policy.schedule() == [0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 2.0]


def test_default_policy_makes_five_attempts_with_four_waits() -> None:
    assert RetryPolicy().schedule() == [0.05, 0.1, 0.2, 0.4]


def test_backoff_stays_capped_for_endless_retries() -> None:
    assert RetryPolicy(first_delay_s=0.1, max_delay_s=5.0).delay(10_000) == 5.0


@pytest.mark.parametrize(
    "kwargs",
    [{"attempts": 0}, {"first_delay_s": -1.0}, {"first_delay_s": 3.0}, {"multiplier": 0.5}],
)
def test_retry_policy_refuses_nonsense(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        RetryPolicy(**kwargs)


def test_dead_letter_headers_name_the_error_and_the_source() -> None:
    headers = dict(
        dead_letter_headers(
            error=RuntimeError("db down"),
            reason="handler_failed",
            attempts=5,
            source_topic="order.events",
            source_partition=2,
            source_offset=41,
            failed_at=NOW,
            original_headers=[("event_type", b"OrderPlaced"), ("attempts", b"spoofed")],
        )
    )
    assert headers["error"] == b"RuntimeError: db down"
    assert headers["error_type"] == b"RuntimeError"
    assert headers["error_reason"] == b"handler_failed"
    assert headers["attempts"] == b"5"
    assert headers["source_topic"] == b"order.events"
    assert headers["source_partition"] == b"2"
    assert headers["source_offset"] == b"41"
    assert headers["failed_at"] == b"2026-03-01T12:00:00Z"
    assert headers["event_type"] == b"OrderPlaced"


def test_dead_letter_error_header_is_bounded() -> None:
    headers = dict(
        dead_letter_headers(
            error=ValueError("x" * 10_000),
            reason="invalid_payload",
            attempts=0,
            source_topic="t",
            source_partition=0,
            source_offset=0,
            failed_at=NOW,
        )
    )
    assert len(headers["error"]) <= 2000


# --- EventConsumer with fakes ----------------------------------------------------------------


class FakeSender:
    """Acknowledges at once, or fails the first `failures` sends."""

    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.sent: list[tuple[str, bytes, bytes | None, dict[str, bytes]]] = []

    async def send(
        self, topic: str, value: bytes, *, key: bytes | None, headers: Headers
    ) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if self.failures > 0:
            self.failures -= 1
            future.set_exception(ConnectionError("broker gone"))
        else:
            self.sent.append((topic, value, key, dict(headers)))
            future.set_result(None)
        return future


class Commits:
    def __init__(self) -> None:
        self.count = 0

    async def __call__(self) -> None:
        self.count += 1


def record(value: bytes, offset: int = 7) -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord(
        topic="order.events",
        partition=1,
        offset=offset,
        timestamp=0,
        timestamp_type=0,
        key=b"o-1",
        value=value,
        checksum=None,
        serialized_key_size=3,
        serialized_value_size=len(value),
        headers=(("event_type", b"OrderShipped"),),
    )


def shipped_envelope(event_type: str = "OrderShipped", **data: Any) -> bytes:
    envelope = Envelope(
        event_type=event_type,
        schema_version=1,
        stream_id="order-o-1",
        stream_version=3,
        occurred_at=NOW,
        producer="order",
        correlation_id="o-1",
        data=data or {"order_id": "o-1", "seller_id": "s-1"},
    )
    return envelope.model_dump_json().encode()


def consumer_with(
    handler: Any, sender: FakeSender, attempts: int = 3
) -> tuple[EventConsumer, list[float]]:
    sleeps: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        sleeps.append(seconds)

    consumer = EventConsumer(
        topic="order.events",
        handler=handler,
        registry=default_registry(),
        dead_letters=sender,
        retry=RetryPolicy(attempts=attempts, first_delay_s=0.05, max_delay_s=2.0),
        clock=FakeClock(NOW),
        sleep=fake_sleep,
    )
    return consumer, sleeps


async def test_handled_event_is_committed_once_after_the_handler() -> None:
    seen: list[str] = []
    commits = Commits()

    async def handle(envelope: Envelope, event: DomainEvent) -> None:
        assert commits.count == 0, "committed before the handler finished"
        assert isinstance(event, OrderShipped)
        seen.append(envelope.event_id)

    consumer, _ = consumer_with(handle, FakeSender())
    await consumer.process(record(shipped_envelope()), commits)
    assert len(seen) == 1
    assert commits.count == 1
    assert consumer.metrics.processed == 1


async def test_failing_handler_is_retried_with_backoff_then_dead_lettered() -> None:
    calls = 0

    async def handle(envelope: Envelope, event: DomainEvent) -> None:
        nonlocal calls
        calls += 1
        raise RuntimeError("db down")

    sender, commits = FakeSender(), Commits()
    consumer, sleeps = consumer_with(handle, sender, attempts=4)
    value = shipped_envelope()
    await consumer.process(record(value), commits)

    assert calls == 4
    assert sleeps == [0.05, 0.1, 0.2]
    [(topic, sent_value, key, headers)] = sender.sent
    assert (topic, sent_value, key) == ("order.events.dlq", value, b"o-1")
    assert headers["attempts"] == b"4"
    assert headers["error_type"] == b"RuntimeError"
    assert commits.count == 1
    assert (consumer.metrics.retried, consumer.metrics.dead_lettered) == (3, 1)


async def test_handler_that_succeeds_on_retry_is_not_dead_lettered() -> None:
    calls = 0

    async def handle(envelope: Envelope, event: DomainEvent) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("transient")

    sender, commits = FakeSender(), Commits()
    consumer, _ = consumer_with(handle, sender)
    await consumer.process(record(shipped_envelope()), commits)
    assert sender.sent == []
    assert (consumer.metrics.processed, consumer.metrics.retried, commits.count) == (1, 1, 1)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"\x00not json", b"invalid_envelope"),
        (b'{"hello": "world"}', b"invalid_envelope"),
        (shipped_envelope(order_id="o-1"), b"invalid_payload"),  # seller_id missing
    ],
)
async def test_poison_message_goes_to_the_dlq_at_once(value: bytes, reason: bytes) -> None:
    async def handle(envelope: Envelope, event: DomainEvent) -> None:
        raise AssertionError("a poison message reached the handler")

    sender, commits = FakeSender(), Commits()
    consumer, sleeps = consumer_with(handle, sender)
    await consumer.process(record(value), commits)
    [(_, sent_value, _, headers)] = sender.sent
    assert sent_value == value
    assert headers["error_reason"] == reason
    assert headers["attempts"] == b"0"
    assert sleeps == []
    assert commits.count == 1


async def test_unknown_event_type_is_skipped_counted_and_committed() -> None:
    async def handle(envelope: Envelope, event: DomainEvent) -> None:
        raise AssertionError("unknown type reached the handler")

    sender, commits = FakeSender(), Commits()
    consumer, _ = consumer_with(handle, sender)
    await consumer.process(record(shipped_envelope("OrderTeleported", x=1)), commits)
    assert sender.sent == []
    assert (consumer.metrics.unknown_types, commits.count) == (1, 1)


async def test_duplicate_causation_counts_as_done() -> None:
    async def handle(envelope: Envelope, event: DomainEvent) -> None:
        raise DuplicateCausation(envelope.event_id)

    sender, commits = FakeSender(), Commits()
    consumer, _ = consumer_with(handle, sender)
    await consumer.process(record(shipped_envelope()), commits)
    assert sender.sent == []
    assert (consumer.metrics.duplicates, commits.count) == (1, 1)


async def test_failed_dlq_publish_is_retried_before_anything_is_committed() -> None:
    sender = FakeSender(failures=3)
    commit_count_when_published: list[int] = []
    commits = Commits()
    original_send = sender.send

    async def watching_send(
        topic: str, value: bytes, *, key: bytes | None, headers: Headers
    ) -> asyncio.Future[Any]:
        commit_count_when_published.append(commits.count)
        return await original_send(topic, value, key=key, headers=headers)

    sender.send = watching_send  # type: ignore[method-assign]

    async def handle(envelope: Envelope, event: DomainEvent) -> None:
        raise AssertionError("unreachable")

    consumer, sleeps = consumer_with(handle, sender)
    await consumer.process(record(b"garbage"), commits)
    assert commit_count_when_published == [0, 0, 0, 0]
    assert len(sender.sent) == 1
    assert consumer.metrics.dlq_publish_failures == 3
    assert sleeps == [0.1, 0.2, 0.4]
    assert commits.count == 1


async def test_cancelled_handler_commits_nothing() -> None:
    started = asyncio.Event()

    async def handle(envelope: Envelope, event: DomainEvent) -> None:
        started.set()
        await asyncio.sleep(60)

    sender, commits = FakeSender(), Commits()
    consumer, _ = consumer_with(handle, sender)
    task = asyncio.create_task(consumer.process(record(shipped_envelope()), commits))
    await asyncio.wait_for(started.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert commits.count == 0
    assert sender.sent == []


# --- batches --------------------------------------------------------------------------------


def envelope_for(order_id: str, version: int) -> bytes:
    return (
        Envelope(
            event_type="OrderShipped",
            schema_version=1,
            stream_id=f"order-{order_id}",
            stream_version=version,
            occurred_at=NOW,
            producer="order",
            correlation_id=order_id,
            data={"order_id": order_id, "seller_id": "s-1"},
        )
        .model_dump_json()
        .encode()
    )


def batch_record(value: bytes, partition: int, offset: int) -> ConsumerRecord[bytes, bytes]:
    return dataclasses.replace(record(value, offset), partition=partition)


class OffsetCommits:
    def __init__(self) -> None:
        self.calls: list[dict[TopicPartition, int]] = []

    async def __call__(self, offsets: dict[TopicPartition, int]) -> None:
        self.calls.append(dict(offsets))


async def test_a_batch_is_committed_once_per_partition_after_every_record_is_resolved() -> None:
    handled: list[str] = []

    async def handle(envelope: Envelope, event: DomainEvent) -> None:
        handled.append(envelope.stream_id)

    sender, commits = FakeSender(), OffsetCommits()
    consumer, _ = consumer_with(handle, sender)
    records = [
        batch_record(envelope_for("a", 1), partition=0, offset=10),
        batch_record(b"garbage", partition=1, offset=4),
        batch_record(envelope_for("b", 1), partition=1, offset=5),
        batch_record(envelope_for("a", 2), partition=0, offset=11),
    ]
    await consumer.process_batch(records, commits)
    assert handled == ["order-a", "order-b", "order-a"]
    assert [topic for topic, *_ in sender.sent] == ["order.events.dlq"]
    assert commits.calls == [
        {TopicPartition("order.events", 0): 12, TopicPartition("order.events", 1): 6}
    ]


async def test_a_failing_batch_handler_falls_back_to_each_event_with_retries() -> None:
    """One event the batch cannot take: the others are handled, it is retried then
    dead-lettered, and only then is the batch committed."""
    one_by_one: list[str] = []

    async def handle(envelope: Envelope, event: DomainEvent) -> None:
        if envelope.stream_id == "order-bad":
            raise ValueError("cannot fold this one")
        one_by_one.append(envelope.stream_id)

    async def handle_batch(events: Sequence[tuple[Envelope, DomainEvent]]) -> None:
        raise ValueError("one of them cannot be folded")

    sender, commits = FakeSender(), OffsetCommits()
    consumer, sleeps = consumer_with(handle, sender, attempts=3)
    consumer.batch_handler = handle_batch
    records = [
        batch_record(envelope_for("a", 1), partition=0, offset=1),
        batch_record(envelope_for("bad", 1), partition=0, offset=2),
        batch_record(envelope_for("c", 1), partition=0, offset=3),
    ]
    await consumer.process_batch(records, commits)
    assert one_by_one == ["order-a", "order-c"]
    assert [headers["source_offset"] for *_, headers in sender.sent] == [b"2"]
    assert sleeps == [0.05, 0.1]  # the bad one was retried in place before the DLQ
    assert commits.calls == [{TopicPartition("order.events", 0): 4}]


async def test_a_cancelled_batch_commits_only_what_it_resolved() -> None:
    started = asyncio.Event()

    async def handle(envelope: Envelope, event: DomainEvent) -> None:
        if envelope.stream_id == "order-slow":
            started.set()
            await asyncio.sleep(60)

    sender, commits = FakeSender(), OffsetCommits()
    consumer, _ = consumer_with(handle, sender)
    records = [
        batch_record(envelope_for("fast", 1), partition=0, offset=1),
        batch_record(envelope_for("slow", 1), partition=0, offset=2),
        batch_record(envelope_for("after", 1), partition=0, offset=3),
    ]
    task = asyncio.create_task(consumer.process_batch(records, commits))
    await asyncio.wait_for(started.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert commits.calls == [{TopicPartition("order.events", 0): 2}]  # the fast one only
