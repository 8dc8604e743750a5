"""TimerScheduler rules on the in-memory store with a fake clock: no sleeping, no system time."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from shared.kernel.clock import FakeClock
from shared.kernel.events.envelope import Envelope
from shared.kernel.eventstore.memory import InMemoryEventStore
from shared.kernel.eventstore.port import DueTimer, DuplicateCausation, NewCommit, NewTimer
from shared.kernel.timers import TimerScheduler

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
DEADLINE = T0 + timedelta(hours=1)


async def schedule(store: InMemoryEventStore, timer_id: str, due_at: datetime) -> None:
    stream_id = f"payment-{timer_id}"
    await store.append(
        NewCommit(
            stream_id=stream_id,
            expected_version=0,
            events=[
                Envelope(
                    event_type="PaymentRequested",
                    schema_version=1,
                    stream_id=stream_id,
                    stream_version=1,
                    occurred_at=T0,
                    producer="payment",
                    correlation_id=timer_id,
                    data={},
                )
            ],
            topic="payment.events",
            partition_key=timer_id,
            timers=[NewTimer(timer_id, "payment_deadline", due_at)],
        )
    )


class Recorder:
    """A `fire` callback that records what fired and can be told to fail."""

    def __init__(self, failures: int = 0, error: Exception | None = None) -> None:
        self.fired: list[str] = []
        self.failures = failures
        self.error = error or RuntimeError("handler failed")

    async def __call__(self, timer: DueTimer) -> None:
        self.fired.append(timer.timer_id)
        if self.failures > 0:
            self.failures -= 1
            raise self.error


async def test_a_timer_fires_once_when_due_and_not_before() -> None:
    store, clock, fire = InMemoryEventStore(), FakeClock(T0), Recorder()
    await schedule(store, "t-1", DEADLINE)
    scheduler = TimerScheduler(store, clock, fire, owner="replica-a")

    assert await scheduler.run_once() == 0
    clock.set(DEADLINE)
    assert await scheduler.run_once() == 1
    clock.advance(timedelta(minutes=5))
    assert await scheduler.run_once() == 0

    assert fire.fired == ["t-1"]


async def test_a_timer_whose_handler_fails_is_fired_again_next_round() -> None:
    store, clock, fire = InMemoryEventStore(), FakeClock(DEADLINE), Recorder(failures=1)
    await schedule(store, "t-1", DEADLINE)
    scheduler = TimerScheduler(store, clock, fire, owner="replica-a")

    assert await scheduler.run_once() == 0
    assert [t.timer_id for t in await store.due_timers(clock.now())] == ["t-1"]
    clock.advance(timedelta(seconds=1))
    assert await scheduler.run_once() == 1

    assert fire.fired == ["t-1", "t-1"]
    assert await store.due_timers(clock.now()) == []


async def test_a_failing_timer_is_retried_with_growing_pauses_not_every_round() -> None:
    store, clock, fire = InMemoryEventStore(), FakeClock(DEADLINE), Recorder(failures=4)
    await schedule(store, "t-1", DEADLINE)
    scheduler = TimerScheduler(store, clock, fire, owner="replica-a")

    fired_at = []
    for _ in range(200):  # rounds every 100 ms for 20 s
        before = len(fire.fired)
        await scheduler.run_once()
        if len(fire.fired) > before:
            fired_at.append((clock.now() - DEADLINE).total_seconds())
        clock.advance(timedelta(milliseconds=100))

    assert fired_at == [0.0, 1.0, 3.0, 7.0, 15.0]  # pauses of 1, 2, 4, 8 s; the fifth succeeds
    assert await store.due_timers(clock.now()) == []
    assert scheduler.metrics.failed == 4 and scheduler.metrics.fired == 1


async def test_a_timer_whose_effect_is_already_stored_is_completed() -> None:
    store, clock = InMemoryEventStore(), FakeClock(DEADLINE)
    fire = Recorder(failures=1, error=DuplicateCausation("t-1"))
    await schedule(store, "t-1", DEADLINE)
    scheduler = TimerScheduler(store, clock, fire, owner="replica-a")

    assert await scheduler.run_once() == 1
    assert await scheduler.run_once() == 0

    assert fire.fired == ["t-1"]


async def test_a_replica_without_the_lease_fires_nothing_until_the_lease_expires() -> None:
    store, clock = InMemoryEventStore(), FakeClock(T0)
    ttl = timedelta(seconds=30)
    fire_a, fire_b = Recorder(), Recorder()
    replica_a = TimerScheduler(store, clock, fire_a, owner="replica-a", lease_ttl=ttl)
    replica_b = TimerScheduler(store, clock, fire_b, owner="replica-b", lease_ttl=ttl)
    assert await replica_a.run_once() == 0
    await schedule(store, "t-1", T0 + timedelta(seconds=10))
    clock.advance(timedelta(seconds=10))

    assert await replica_b.run_once() == 0
    clock.advance(ttl)
    assert await replica_b.run_once() == 1

    assert (fire_a.fired, fire_b.fired) == ([], ["t-1"])


async def test_due_timers_fire_earliest_first_in_batches() -> None:
    store, clock, fire = InMemoryEventStore(), FakeClock(T0 + timedelta(days=1)), Recorder()
    for n in (3, 1, 2):
        await schedule(store, f"t-{n}", T0 + timedelta(minutes=n))
    scheduler = TimerScheduler(store, clock, fire, owner="replica-a", batch_size=2)

    assert await scheduler.run_once() == 2
    assert await scheduler.run_once() == 1

    assert fire.fired == ["t-1", "t-2", "t-3"]


async def test_run_polls_until_stopped_and_gives_the_lease_back() -> None:
    store, clock = InMemoryEventStore(), FakeClock(DEADLINE)
    await schedule(store, "t-1", DEADLINE)
    stop = asyncio.Event()

    async def fire_then_stop(timer: DueTimer) -> None:
        stop.set()

    scheduler = TimerScheduler(store, clock, fire_then_stop, owner="replica-a")
    await asyncio.wait_for(scheduler.run(interval_s=0, stop_event=stop), timeout=5)

    assert await store.due_timers(clock.now()) == []
    assert await store.try_lease("timers", "replica-b", timedelta(seconds=30), clock.now())


async def test_a_holder_paused_mid_round_is_fenced_and_the_new_holder_fires() -> None:
    """Replica a takes the lease and is paused past its TTL inside its round (its `fire` is
    where the pause hits); b takes the lease over and fires; a's effect is refused."""
    store, clock = InMemoryEventStore(), FakeClock(DEADLINE)
    await schedule(store, "timer-1", DEADLINE)
    ttl = timedelta(seconds=3)

    async def fire(timer: DueTimer) -> None:
        if timer.fence is not None and timer.fence.owner == "a":
            clock.advance(ttl + timedelta(seconds=1))
            await b.run_once()  # b runs while a is frozen
        expired = Envelope(
            event_type="PaymentDeadlineExpired",
            schema_version=1,
            stream_id=timer.stream_id,
            stream_version=2,
            occurred_at=clock.now(),
            producer="payment",
            correlation_id=timer.timer_id,
            data={},
        )
        await store.append(
            NewCommit(
                stream_id=timer.stream_id,
                expected_version=1,
                events=[expired],
                topic="payment.events",
                partition_key=timer.timer_id,
                causation_id=timer.timer_id,
                handler="payment.timers",
                fence=timer.fence,
            )
        )

    a = TimerScheduler(store, clock, fire, "a", lease_ttl=ttl)
    b = TimerScheduler(store, clock, fire, "b", lease_ttl=ttl)

    assert await a.run_once() == 0

    commits = await store.stream_commits("payment-timer-1")
    assert [c.events[-1].event_type for c in commits] == [
        "PaymentRequested",
        "PaymentDeadlineExpired",
    ]
    assert (a.metrics.fenced, a.metrics.fired, b.metrics.fired) == (1, 0, 1)
    assert await store.due_timers(clock.now()) == []
