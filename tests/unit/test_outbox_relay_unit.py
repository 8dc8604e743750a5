"""The outbox relay's decisions with a fake sender: what it marks, in which order, and when."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from shared.contracts.events import OrderShipped
from shared.kernel.clock import FakeClock
from shared.kernel.events.envelope import Envelope
from shared.kernel.eventstore.memory import InMemoryEventStore
from shared.kernel.eventstore.port import NewCommit
from shared.kernel.messaging.kafka import Headers
from shared.kernel.outbox import OutboxPublishError, OutboxRelay
from tests.conftest import eventually

NOW = datetime(2026, 3, 1, tzinfo=UTC)


def new_commit(order_id: str, version: int, topic: str = "order.events") -> NewCommit:
    envelope = Envelope.of(
        OrderShipped(order_id=order_id, seller_id="s-1", tracking_number=f"v{version}"),
        stream_id=f"order-{order_id}",
        stream_version=version,
        occurred_at=NOW,
        producer="order",
        correlation_id=order_id,
        causation_id=None,
    )
    return NewCommit(
        stream_id=f"order-{order_id}",
        expected_version=version - 1,
        events=[envelope],
        topic=topic,
        partition_key=order_id,
    )


class FakeSender:
    """Records sends; `fails(value)` decides which records the broker refuses."""

    def __init__(self, fails: Callable[[bytes], bool] = lambda value: False) -> None:
        self.fails = fails
        self.sent: list[tuple[str, bytes | None, dict[str, bytes]]] = []

    async def send(
        self, topic: str, value: bytes, *, key: bytes | None, headers: Headers
    ) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if self.fails(value):
            future.set_exception(TimeoutError("maybe delivered"))
        else:
            self.sent.append((topic, key, dict(headers)))
            future.set_result(None)
        return future


async def stored(*commits: NewCommit) -> InMemoryEventStore:
    store = InMemoryEventStore()
    for commit in commits:
        await store.append(commit)
    return store


async def test_relay_publishes_every_commit_with_key_and_headers_then_marks_it() -> None:
    store = await stored(new_commit("a", 1), new_commit("b", 1), new_commit("a", 2))
    sender = FakeSender()
    relay = OutboxRelay(store, sender, FakeClock(NOW), owner="r1")

    assert await relay.run_once() == 3
    assert [key for _, key, _ in sender.sent] == [b"a", b"b", b"a"]
    topic, _, headers = sender.sent[0]
    assert topic == "order.events"
    assert headers["event_type"] == b"OrderShipped"
    assert set(headers) >= {"event_type", "event_id"}
    assert await store.unpublished() == []
    assert await relay.run_once() == 0


async def test_a_failed_commit_holds_back_the_rest_of_its_stream_only() -> None:
    store = await stored(
        new_commit("a", 1), new_commit("a", 2), new_commit("b", 1), new_commit("a", 3)
    )
    relay = OutboxRelay(
        store, FakeSender(fails=lambda value: b'"v2"' in value), FakeClock(NOW), owner="r1"
    )

    with pytest.raises(OutboxPublishError) as raised:
        await relay.run_once()

    assert raised.value.published == 2
    assert raised.value.failed_streams == ("order-a",)
    left = [(c.stream_id, c.first_version) for c in await store.unpublished()]
    assert left == [("order-a", 2), ("order-a", 3)]


async def test_the_relay_retries_held_back_commits_in_order_on_the_next_run() -> None:
    store = await stored(new_commit("a", 1), new_commit("a", 2), new_commit("a", 3))
    broken = True
    sender = FakeSender(fails=lambda value: broken and b'"v2"' in value)
    relay = OutboxRelay(store, sender, FakeClock(NOW), owner="r1")
    with pytest.raises(OutboxPublishError):
        await relay.run_once()
    broken = False
    assert await relay.run_once() == 2
    assert await store.unpublished() == []


async def test_a_second_relay_publishes_nothing_while_the_first_holds_the_lease() -> None:
    clock = FakeClock(NOW)
    store = await stored(new_commit("a", 1))
    first, second = FakeSender(), FakeSender()
    relay_1 = OutboxRelay(store, first, clock, owner="r1", lease_ttl=timedelta(seconds=10))
    relay_2 = OutboxRelay(store, second, clock, owner="r2", lease_ttl=timedelta(seconds=10))

    assert await relay_1.run_once() == 1
    await store.append(new_commit("a", 2))
    assert await relay_2.run_once() == 0
    assert second.sent == []

    clock.advance(timedelta(seconds=11))  # relay 1 died: its lease expires
    assert await relay_2.run_once() == 1
    assert await relay_1.run_once() == 0


async def test_run_loop_backs_off_while_the_broker_fails_and_releases_its_lease() -> None:
    store = await stored(new_commit("a", 1))
    failures = 2

    def fails(value: bytes) -> bool:
        nonlocal failures
        failures -= 1
        return failures >= 0

    relay = OutboxRelay(store, FakeSender(fails=fails), FakeClock(NOW), owner="r1")
    stop = asyncio.Event()
    task = asyncio.create_task(relay.run(0.001, stop))

    async def drained() -> bool:
        return not await store.unpublished()

    await eventually(drained, timeout_s=5, what="the outbox to drain")
    stop.set()
    await asyncio.wait_for(task, 5)
    assert await store.unpublished() == []
    assert relay.metrics.failures == 2
    other = OutboxRelay(store, FakeSender(), FakeClock(NOW), owner="r2")
    assert await other.store.try_lease("outbox", "r2", timedelta(seconds=1), NOW)


class LeaseCountingStore(InMemoryEventStore):
    def __init__(self) -> None:
        super().__init__()
        self.lease_requests = 0

    async def try_lease(self, name: str, owner: str, ttl: timedelta, now: datetime) -> bool:
        self.lease_requests += 1
        return await super().try_lease(name, owner, ttl, now)


async def test_the_relay_renews_its_lease_only_once_a_third_of_it_has_passed() -> None:
    store, clock = LeaseCountingStore(), FakeClock(datetime(2026, 3, 2, tzinfo=UTC))
    relay = OutboxRelay(store, FakeSender(), clock, "me", lease_ttl=timedelta(seconds=15))
    for _ in range(10):
        await relay.run_once()
        clock.advance(timedelta(milliseconds=400))  # 4 s in all: within the first third
    assert store.lease_requests == 1
    clock.advance(timedelta(seconds=2))
    await relay.run_once()
    assert store.lease_requests == 2
    rival = OutboxRelay(store, FakeSender(), clock, "rival", lease_ttl=timedelta(seconds=15))
    assert await rival.run_once() == 0  # the renewed lease still holds the rival off
    assert rival.metrics.runs_without_lease == 1


async def test_a_relay_paused_mid_batch_past_its_lease_is_fenced_and_the_new_holder_marks() -> None:
    """Relay a is frozen after sending (the pause hits inside its send), relay b takes the
    lease over and publishes; a's marks are refused by the fence and counted."""
    store, clock = await stored(new_commit("a", 1)), FakeClock(NOW)
    ttl = timedelta(seconds=3)
    b = OutboxRelay(store, FakeSender(), clock, "b", lease_ttl=ttl)

    class FreezingSender(FakeSender):
        async def send(
            self, topic: str, value: bytes, *, key: bytes | None, headers: Headers
        ) -> asyncio.Future[Any]:
            sent = await super().send(topic, value, key=key, headers=headers)
            clock.advance(ttl + timedelta(seconds=1))
            assert await b.run_once() == 1  # b works while a is frozen
            return sent

    a = OutboxRelay(store, FreezingSender(), clock, "a", lease_ttl=ttl)

    assert await a.run_once() == 0

    assert (a.metrics.fenced, a.metrics.published, b.metrics.published) == (1, 0, 1)
    assert await store.unpublished() == []
    assert await a.run_once() == 0 and a.metrics.runs_without_lease == 1


async def test_a_commit_wakes_the_relay_long_before_its_next_poll() -> None:
    store = InMemoryEventStore()
    sender = FakeSender()
    relay = OutboxRelay(store, sender, FakeClock(NOW), owner="r1")
    store.on_append(relay.wake)
    stop = asyncio.Event()
    task = asyncio.create_task(relay.run(interval_s=60, stop_event=stop, linger_s=0.001))
    await asyncio.sleep(0.05)  # the first run found nothing; the next poll is a minute away

    await store.append(new_commit("o-1", 1))
    await store.append(new_commit("o-2", 1))

    async def published() -> bool:
        return len(sender.sent) == 2 and not await store.unpublished()

    await eventually(published, timeout_s=2, what="the woken relay to publish both commits")
    stop.set()
    await asyncio.wait_for(task, 1)  # not a minute


async def test_a_failing_relay_keeps_its_back_off_however_many_commits_arrive() -> None:
    store = InMemoryEventStore()
    sender = FakeSender(fails=lambda value: True)
    relay = OutboxRelay(store, sender, FakeClock(NOW), owner="r1")
    store.on_append(relay.wake)
    await store.append(new_commit("o-0", 1))
    stop = asyncio.Event()
    task = asyncio.create_task(relay.run(interval_s=0.001, stop_event=stop))
    for index in range(1, 40):  # a commit every 5 ms for 0.2 s while the broker refuses all
        await store.append(new_commit(f"o-{index}", 1))
        await asyncio.sleep(0.005)
    stop.set()
    await asyncio.wait_for(task, 1)
    # back-off from 0.1 s doubling: at most a few runs in 0.2 s, not one per commit
    assert 1 <= relay.metrics.failures <= 3
