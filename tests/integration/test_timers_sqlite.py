"""Durable timers on a real SQLite file: a restart loses none, two replicas fire none twice.

The timer's effect is committed with causation_id = timer_id, as services do, so "fired
once" is checked on what was stored, not only on how often the handler ran.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from shared.kernel.clock import FakeClock
from shared.kernel.events.envelope import Envelope
from shared.kernel.eventstore.port import DueTimer, EventStore, NewCommit, NewTimer, StreamNotFound
from shared.kernel.eventstore.sqlite import SQLiteEventStore
from shared.kernel.timers import FireTimer, TimerScheduler

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
DEADLINE = T0 + timedelta(hours=24)
STREAM = "payment-o-1"


def event(version: int, event_type: str, causation_id: str | None = None) -> Envelope:
    return Envelope(
        event_type=event_type,
        schema_version=1,
        stream_id=STREAM,
        stream_version=version,
        occurred_at=T0,
        producer="payment",
        correlation_id="o-1",
        causation_id=causation_id,
        data={"order_id": "o-1"},
    )


def expire_payment(store: EventStore, calls: list[str]) -> FireTimer:
    """The timer's effect: one PaymentDeadlineExpired, de-duplicated by the timer id."""

    async def fire(timer: DueTimer) -> None:
        calls.append(timer.timer_id)
        version = len(await store.load_stream(timer.stream_id))
        await store.append(
            NewCommit(
                stream_id=timer.stream_id,
                expected_version=version,
                events=[event(version + 1, "PaymentDeadlineExpired", timer.timer_id)],
                topic="payment.events",
                partition_key="o-1",
                causation_id=timer.timer_id,
            )
        )

    return fire


async def expirations(store: EventStore) -> list[str]:
    try:
        events = await store.load_stream(STREAM)
    except StreamNotFound:
        return []
    return [e.event_type for e in events if e.event_type == "PaymentDeadlineExpired"]


@pytest.fixture
def path(tmp_path: Path) -> str:
    return str(tmp_path / "var" / "payment.db")


@pytest.fixture
async def opened(path: str) -> AsyncIterator[list[EventStore]]:
    stores: list[EventStore] = []
    yield stores
    for store in stores:
        await store.close()


async def open_store(path: str, opened: list[EventStore]) -> EventStore:
    store = await SQLiteEventStore.open(path)
    opened.append(store)
    return store


async def schedule_deadline(store: EventStore) -> None:
    await store.append(
        NewCommit(
            stream_id=STREAM,
            expected_version=0,
            events=[event(1, "PaymentRequested")],
            topic="payment.events",
            partition_key="o-1",
            timers=[NewTimer("deadline-o-1", "payment_deadline", DEADLINE, {"order_id": "o-1"})],
        )
    )


async def test_a_due_timer_fires_once_after_a_restart(path: str, opened: list[EventStore]) -> None:
    clock, calls = FakeClock(T0), list[str]()
    before = await open_store(path, opened)
    scheduler = TimerScheduler(before, clock, expire_payment(before, calls), owner="replica-a")
    await schedule_deadline(before)
    assert await scheduler.run_once() == 0
    await before.close()
    del scheduler

    after = await open_store(path, opened)
    restarted = TimerScheduler(after, clock, expire_payment(after, calls), owner="replica-a")
    clock.set(DEADLINE)

    assert await restarted.run_once() == 1
    assert await restarted.run_once() == 0
    assert calls == ["deadline-o-1"]
    assert await expirations(after) == ["PaymentDeadlineExpired"]


async def test_two_replicas_on_one_file_fire_a_due_timer_once(
    path: str, opened: list[EventStore]
) -> None:
    clock, calls = FakeClock(DEADLINE), list[str]()
    store_a, store_b = await open_store(path, opened), await open_store(path, opened)
    await schedule_deadline(store_a)
    replica_a = TimerScheduler(store_a, clock, expire_payment(store_a, calls), owner="replica-a")
    replica_b = TimerScheduler(store_b, clock, expire_payment(store_b, calls), owner="replica-b")

    fired = await asyncio.gather(replica_a.run_once(), replica_b.run_once())
    clock.advance(timedelta(minutes=5))
    fired_later = await asyncio.gather(replica_b.run_once(), replica_a.run_once())

    assert sum(fired) + sum(fired_later) == 1
    assert calls == ["deadline-o-1"]
    assert await expirations(store_a) == ["PaymentDeadlineExpired"]


async def test_a_timer_left_uncompleted_by_a_crash_is_not_applied_twice(
    path: str, opened: list[EventStore]
) -> None:
    """The effect was stored but the replica died before completing the timer."""
    clock, calls = FakeClock(DEADLINE), list[str]()
    store = await open_store(path, opened)
    await schedule_deadline(store)
    (timer,) = await store.due_timers(clock.now())
    await expire_payment(store, calls)(timer)

    scheduler = TimerScheduler(store, clock, expire_payment(store, calls), owner="replica-b")

    assert await scheduler.run_once() == 1
    assert await store.due_timers(clock.now()) == []
    assert await expirations(store) == ["PaymentDeadlineExpired"]


async def test_a_timer_whose_handler_fails_once_fires_again_after_its_pause(
    path: str, opened: list[EventStore]
) -> None:
    clock, calls, failures = FakeClock(DEADLINE), list[str](), [RuntimeError("gateway down")]
    store = await open_store(path, opened)
    await schedule_deadline(store)
    succeed = expire_payment(store, calls)

    async def flaky(timer: DueTimer) -> None:
        if failures:
            calls.append(timer.timer_id)
            raise failures.pop()
        await succeed(timer)

    scheduler = TimerScheduler(store, clock, flaky, owner="replica-a")

    assert await scheduler.run_once() == 0
    assert await scheduler.run_once() == 0  # still pausing after the failure
    clock.advance(timedelta(seconds=1))
    assert await scheduler.run_once() == 1
    assert await scheduler.run_once() == 0
    assert calls == ["deadline-o-1", "deadline-o-1"]
    assert await expirations(store) == ["PaymentDeadlineExpired"]
