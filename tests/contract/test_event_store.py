"""The EventStore contract: every adapter (and the fake) passes these same tests."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import itertools
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from pymongo import AsyncMongoClient

from shared.kernel.clock import FakeClock
from shared.kernel.events.canonical import GENESIS_HASH, canonical_json, chain_hash
from shared.kernel.events.envelope import Envelope
from shared.kernel.eventstore.chain import seal_canonical, verify_chain
from shared.kernel.eventstore.memory import InMemoryEventStore
from shared.kernel.eventstore.mongo import MongoEventStore
from shared.kernel.eventstore.port import (
    Backlog,
    Commit,
    ConcurrencyConflict,
    DuplicateCausation,
    EventStore,
    LeaseLost,
    NewCommit,
    NewTimer,
    StoreUnavailable,
    StreamNotFound,
)
from shared.kernel.eventstore.sqlite import SQLiteEventStore
from shared.kernel.storage import mongo_database_name, open_document_store, open_event_store
from tests.contract.conftest import Backend

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


def envelope(stream_id: str, version: int, **data: Any) -> Envelope:
    return Envelope(
        event_type="OrderPlaced",
        schema_version=1,
        stream_id=stream_id,
        stream_version=version,
        occurred_at=T0 + timedelta(seconds=version, microseconds=123),
        producer="order",
        correlation_id=stream_id.removeprefix("order-"),
        data={"order_id": stream_id, "amount": {"amount": 150_000, "currency": "IDR"}, **data},
    )


def new_commit(
    stream_id: str,
    expected_version: int,
    count: int = 1,
    *,
    causation_id: str | None = None,
    timers: tuple[NewTimer, ...] = (),
    handler: str = "",
) -> NewCommit:
    return NewCommit(
        stream_id=stream_id,
        expected_version=expected_version,
        events=[envelope(stream_id, expected_version + n, n=n) for n in range(1, count + 1)],
        topic="order.events",
        partition_key=stream_id,
        causation_id=causation_id,
        timers=timers,
        handler=handler,
    )


async def all_commits(store: EventStore, **kwargs: Any) -> list[Commit]:
    return [commit async for commit in store.read_all(**kwargs)]


@pytest.fixture
async def store(backend: Backend) -> EventStore:
    return await backend.open()


async def test_appended_events_load_back_equal_and_in_version_order(store: EventStore) -> None:
    first = new_commit("order-1", 0, count=2)
    second = new_commit("order-1", 2)

    stored_first = await store.append(first)
    stored_second = await store.append(second)

    loaded = await store.load_stream("order-1")
    assert loaded == [*first.events, *second.events]
    assert [event.wire() for event in loaded] == [e.wire() for e in (*first.events, *second.events)]
    assert (stored_first.first_version, stored_first.last_version) == (1, 2)
    assert (stored_second.first_version, stored_second.last_version) == (3, 3)
    assert stored_second.position > stored_first.position
    assert not stored_first.published
    assert await store.stream_commits("order-1") == [stored_first, stored_second]


async def test_loaded_envelopes_stay_frozen(store: EventStore) -> None:
    await store.append(new_commit("order-1", 0))

    (loaded,) = await store.load_stream("order-1")

    with pytest.raises(ValidationError):
        loaded.event_type = "Edited"  # type: ignore[misc]
    assert loaded.occurred_at.tzinfo is not None


async def test_an_unknown_stream_is_not_found(store: EventStore) -> None:
    with pytest.raises(StreamNotFound):
        await store.load_stream("order-missing")
    assert await store.stream_commits("order-missing") == []


@pytest.mark.parametrize(
    "commit",
    [
        pytest.param(
            NewCommit(
                stream_id="order-1",
                expected_version=0,
                events=[envelope("order-2", 1)],
                topic="order.events",
                partition_key="order-1",
            ),
            id="foreign-stream",
        ),
        pytest.param(
            NewCommit(
                stream_id="order-1",
                expected_version=0,
                events=[envelope("order-1", 1), envelope("order-1", 3)],
                topic="order.events",
                partition_key="order-1",
            ),
            id="version-gap",
        ),
        pytest.param(
            NewCommit(
                stream_id="order-1",
                expected_version=0,
                events=[envelope("order-1", 2)],
                topic="order.events",
                partition_key="order-1",
            ),
            id="wrong-first-version",
        ),
        pytest.param(
            NewCommit(
                stream_id="order-1",
                expected_version=0,
                events=[],
                topic="order.events",
                partition_key="order-1",
            ),
            id="no-events",
        ),
    ],
)
async def test_a_malformed_commit_is_refused_and_writes_nothing(
    store: EventStore, commit: NewCommit
) -> None:
    with pytest.raises(ValueError):
        await store.append(commit)

    assert await all_commits(store) == []


async def test_two_appends_on_one_version_exactly_one_wins(backend: Backend) -> None:
    left, right = await backend.open(), await backend.open()

    outcomes = await asyncio.gather(
        left.append(new_commit("order-1", 0, count=2)),
        right.append(new_commit("order-1", 0, count=3)),
        return_exceptions=True,
    )

    winners = [outcome for outcome in outcomes if isinstance(outcome, Commit)]
    losers = [outcome for outcome in outcomes if isinstance(outcome, ConcurrencyConflict)]
    assert (len(winners), len(losers)) == (1, 1), outcomes
    assert await left.load_stream("order-1") == list(winners[0].events)


@pytest.mark.parametrize("stale_version", [1, 2, 4, 9])
async def test_an_expected_version_that_is_not_the_head_is_a_conflict(
    store: EventStore, stale_version: int
) -> None:
    """Versions inside an earlier commit or past the head: the unique index alone misses these."""
    await store.append(new_commit("order-1", 0, count=3))

    with pytest.raises(ConcurrencyConflict):
        await store.append(new_commit("order-1", stale_version))

    assert [e.stream_version for e in await store.load_stream("order-1")] == [1, 2, 3]


async def test_concurrent_writers_lose_no_commit_and_leave_contiguous_versions(
    backend: Backend,
) -> None:
    streams = ["order-a", "order-b", "order-c"]
    writers, commits_each = 10, backend.concurrent_commits_per_writer
    stores = [await backend.open() for _ in range(writers)]
    unexpected: list[BaseException] = []

    async def write(store: EventStore, stream_choice: int) -> None:
        chooser = random.Random(stream_choice)
        done = 0
        while done < commits_each:
            stream = chooser.choice(streams)
            try:
                version = len(await store.load_stream(stream))
            except StreamNotFound:
                version = 0
            try:
                await store.append(new_commit(stream, version, count=chooser.randint(1, 3)))
            except ConcurrencyConflict:
                await asyncio.sleep(0)
                continue
            except Exception as error:
                unexpected.append(error)
                return
            done += 1

    await asyncio.gather(*(write(store, index) for index, store in enumerate(stores)))

    assert unexpected == []
    commits = await all_commits(stores[0], batch_size=97)
    assert len(commits) == writers * commits_each
    positions = [commit.position for commit in commits]
    assert positions == sorted(set(positions))
    for stream in streams:
        versions = [event.stream_version for event in await stores[0].load_stream(stream)]
        assert versions == list(range(1, len(versions) + 1))
    assert verify_chain(commits) == []


async def test_a_conflicting_commit_writes_nothing(store: EventStore) -> None:
    await store.append(new_commit("order-1", 0))
    late = new_commit(
        "order-1",
        0,
        count=2,
        causation_id="payment-received-1",
        timers=(NewTimer("timer-late", "payment_deadline", T0),),
    )

    with pytest.raises(ConcurrencyConflict):
        await store.append(late)

    assert [event.stream_version for event in await store.load_stream("order-1")] == [1]
    assert len(await all_commits(store)) == 1
    assert await store.due_timers(T0 + timedelta(days=365)) == []
    assert await store.commit_by_causation("payment-received-1") is None


async def test_a_commit_reusing_a_timer_id_writes_nothing(
    backend: Backend, store: EventStore
) -> None:
    if backend.name == "mongo-fake-mongomock":
        pytest.skip("mongomock does not enforce unique indexes on array fields")
    timer = NewTimer("timer-1", "payment_deadline", T0)
    await store.append(new_commit("order-1", 0, timers=(timer,)))

    with pytest.raises(ValueError):
        await store.append(new_commit("order-2", 0, timers=(timer,)))

    with pytest.raises(StreamNotFound):
        await store.load_stream("order-2")
    assert [t.stream_id for t in await store.due_timers(T0)] == ["order-1"]


async def test_a_repeated_causation_is_refused_and_the_first_commit_found(
    store: EventStore,
) -> None:
    first = await store.append(new_commit("order-1", 0, causation_id="event-42"))

    with pytest.raises(DuplicateCausation) as refused:
        await store.append(new_commit("order-2", 0, causation_id="event-42"))

    assert refused.value.causation_id == "event-42"
    assert await store.commit_by_causation("event-42") == first
    assert await store.commit_by_causation("event-43") is None
    with pytest.raises(StreamNotFound):
        await store.load_stream("order-2")


async def test_concurrent_appends_refuse_only_the_conflicting_and_duplicate_ones(
    store: EventStore,
) -> None:
    """Appends in flight together (a group commit, where the store makes one) succeed or fail
    one by one: a stale version and a repeated cause are refused, everything else is stored,
    and every chain still verifies."""
    await store.append(new_commit("order-1", 0))
    await store.append(new_commit("order-9", 0, causation_id="ev-1", handler="h"))
    appends = [
        new_commit("order-1", 1),
        new_commit("order-1", 0),  # stale: order-1 is already at version 1
        new_commit("order-2", 0),
        new_commit("order-3", 0, causation_id="ev-1", handler="h"),  # already handled
        new_commit("order-4", 0, count=3),
        new_commit("order-2", 1),  # after order-2's first commit in the same batch
    ]
    outcomes = await asyncio.gather(*(store.append(c) for c in appends), return_exceptions=True)

    assert isinstance(outcomes[1], ConcurrencyConflict)
    assert isinstance(outcomes[3], DuplicateCausation)
    stored = [o for o in outcomes if not isinstance(o, BaseException)]
    assert [(c.stream_id, c.first_version) for c in stored] == [
        ("order-1", 2),
        ("order-2", 1),
        ("order-4", 1),
        ("order-2", 2),
    ]
    for stream in ("order-1", "order-2", "order-4"):
        assert verify_chain(await store.stream_commits(stream)) == []
    with pytest.raises(StreamNotFound):
        await store.load_stream("order-3")


async def test_a_stream_is_read_from_after_a_version(store: EventStore) -> None:
    await store.append(new_commit("order-1", 0, count=2))
    await store.append(new_commit("order-1", 2, count=3))

    assert [e.stream_version for e in await store.load_stream("order-1", 2)] == [3, 4, 5]
    assert await store.load_stream("order-1", 5) == []
    with pytest.raises(StreamNotFound):
        await store.load_stream("order-9")


async def test_one_cause_is_stored_once_per_handler(store: EventStore) -> None:
    """The de-duplication key is (handler, cause): two reactions to one message both land,
    each of them only once."""
    opened = await store.append(new_commit("payment-1", 0, causation_id="ev-7", handler="open"))
    counted = await store.append(new_commit("seller-1", 0, causation_id="ev-7", handler="count"))

    with pytest.raises(DuplicateCausation) as refused:
        await store.append(new_commit("seller-2", 0, causation_id="ev-7", handler="count"))

    assert (refused.value.causation_id, refused.value.handler) == ("ev-7", "count")
    assert await store.commit_by_causation("ev-7", "open") == opened
    assert await store.commit_by_causation("ev-7", "count") == counted
    assert await store.commit_by_causation("ev-7") is None
    assert [(c.stream_id, c.handler) for c in await all_commits(store)] == [
        ("payment-1", "open"),
        ("seller-1", "count"),
    ]


async def test_commits_without_a_causation_never_collide(store: EventStore) -> None:
    await store.append(new_commit("order-1", 0))
    await store.append(new_commit("order-2", 0))
    await store.append(new_commit("order-1", 1))

    commits = await all_commits(store)
    assert [commit.causation_id for commit in commits] == [None, None, None]


async def test_the_hash_chain_links_every_commit_of_a_stream(store: EventStore) -> None:
    await store.append(new_commit("order-1", 0, count=2))
    await store.append(new_commit("order-2", 0))
    await store.append(new_commit("order-1", 2))

    commits = await store.stream_commits("order-1")

    assert commits[0].prev_hash == GENESIS_HASH
    assert commits[1].prev_hash == commits[0].hash
    assert verify_chain(commits) == []
    assert verify_chain(await all_commits(store)) == []


async def test_an_event_edited_underneath_the_store_is_detected(
    backend: Backend, store: EventStore
) -> None:
    await store.append(new_commit("order-1", 0))
    await store.append(new_commit("order-1", 1, count=2))
    await store.append(new_commit("order-1", 3))

    await backend.edit_event_data("order-1", 2, {"order_id": "order-1", "amount": 1})

    commits = await store.stream_commits("order-1")
    assert commits[1].events[0].data["amount"] == 1
    breaks = verify_chain(commits)
    assert [(b.first_version, b.kind) for b in breaks] == [(2, "hash_mismatch")]


async def test_read_by_stream_returns_every_commit_once_stream_after_stream(
    store: EventStore,
) -> None:
    for n in range(12):
        await store.append(new_commit(f"order-{n % 4}", n // 4))
    by_stream = [commit async for commit in store.read_by_stream(batch_size=5)]
    keys = [(commit.stream_id, commit.first_version) for commit in by_stream]
    assert keys == sorted(keys) and len(set(keys)) == 12
    assert sorted(by_stream, key=lambda c: c.position) == await all_commits(store)


async def test_read_all_returns_every_commit_once_in_store_order(store: EventStore) -> None:
    for n in range(12):
        stream = f"order-{n % 4}"
        await store.append(new_commit(stream, n // 4))

    commits = await all_commits(store, batch_size=5)
    positions = [commit.position for commit in commits]

    assert len(commits) == 12
    assert all(a < b for a, b in itertools.pairwise(positions))
    assert await all_commits(store, after_position=positions[6]) == commits[7:]
    assert await all_commits(store, after_position=positions[-1]) == []


async def test_read_all_wire_is_read_all_in_wire_form(store: EventStore) -> None:
    for n in range(7):
        await store.append(new_commit(f"order-{n % 3}", n // 3))

    wire = [(stream, events) async for stream, events in store.read_all_wire(batch_size=3)]

    expected = [(c.stream_id, [e.wire() for e in c.events]) for c in await all_commits(store)]
    assert wire == expected


async def test_commits_stay_unpublished_until_marked(store: EventStore) -> None:
    stored = [await store.append(new_commit(f"order-{n}", 0)) for n in range(4)]

    assert await store.unpublished() == stored
    assert await store.unpublished(limit=2) == stored[:2]

    await store.mark_published([stored[0].position, stored[2].position])

    assert await store.unpublished() == [stored[1], stored[3]]
    assert [c.published for c in await all_commits(store)] == [True, False, True, False]
    await store.mark_published([])


async def test_timers_are_stored_with_their_commit_and_fall_due_in_time(
    store: EventStore,
) -> None:
    deadline = NewTimer("timer-deadline", "payment_deadline", T0 + timedelta(hours=1), {"n": 1})
    window = NewTimer("timer-window", "seller_response", T0 + timedelta(hours=2))
    await store.append(new_commit("order-1", 0, timers=(window, deadline)))

    assert await store.due_timers(T0 + timedelta(minutes=59)) == []
    (due,) = await store.due_timers(T0 + timedelta(hours=1))
    assert (due.timer_id, due.stream_id, due.name, due.data) == (
        "timer-deadline",
        "order-1",
        "payment_deadline",
        {"n": 1},
    )
    assert due.due_at == T0 + timedelta(hours=1)
    later = T0 + timedelta(days=1)
    assert [t.timer_id for t in await store.due_timers(later)] == ["timer-deadline", "timer-window"]
    assert [t.timer_id for t in await store.due_timers(later, limit=1)] == ["timer-deadline"]

    await store.complete_timer("timer-deadline")

    assert [t.timer_id for t in await store.due_timers(later)] == ["timer-window"]


async def test_the_backlog_counts_every_unpublished_commit_and_the_due_and_overdue_timers(
    store: EventStore,
) -> None:
    hour = timedelta(hours=1)
    assert await store.backlog(T0, hour) == Backlog(0, None, 0, 0)
    early = NewTimer("timer-early", "payment_deadline", T0)
    late = NewTimer("timer-late", "seller_response", T0 + 2 * hour)
    stored = [await store.append(new_commit(f"order-{n}", 0)) for n in range(1200)]
    await store.append(new_commit("order-timers", 0, timers=(early, late)))
    await store.mark_published([stored[0].position, stored[1].position])

    backlog = await store.backlog(T0 + 2 * hour, hour)

    # Uncapped (more than one relay batch), and the oldest is the first one not published.
    assert backlog.unpublished == 1199
    assert backlog.oldest_unpublished_at == stored[2].events[0].occurred_at
    assert (backlog.timers_due, backlog.timers_overdue) == (2, 1)
    await store.complete_timer("timer-early")
    assert (await store.backlog(T0 + 2 * hour, hour)).timers_due == 1


async def test_a_lease_is_exclusive_until_it_expires(store: EventStore) -> None:
    clock = FakeClock(T0)
    ttl = timedelta(seconds=30)

    assert await store.try_lease("timers", "replica-a", ttl, clock.now())
    assert not await store.try_lease("timers", "replica-b", ttl, clock.now())
    clock.advance(timedelta(seconds=20))
    assert await store.try_lease("timers", "replica-a", ttl, clock.now())
    clock.advance(timedelta(seconds=29))
    assert not await store.try_lease("timers", "replica-b", ttl, clock.now())
    clock.advance(timedelta(seconds=1))
    assert await store.try_lease("timers", "replica-b", ttl, clock.now())
    assert not await store.try_lease("timers", "replica-a", ttl, clock.now())
    assert await store.try_lease("relay", "replica-a", ttl, clock.now())

    await store.release_lease("timers", "replica-a")
    assert not await store.try_lease("timers", "replica-a", ttl, clock.now())
    await store.release_lease("timers", "replica-b")
    assert await store.try_lease("timers", "replica-a", ttl, clock.now())


async def test_a_lease_epoch_holds_while_renewed_and_grows_on_every_fresh_grant(
    store: EventStore,
) -> None:
    clock = FakeClock(T0)
    ttl = timedelta(seconds=3)

    first = await store.try_lease("timers", "replica-a", ttl, clock.now())
    clock.advance(timedelta(seconds=1))
    renewed = await store.try_lease("timers", "replica-a", ttl, clock.now())
    clock.advance(timedelta(seconds=3))  # replica-a froze past its TTL
    taken = await store.try_lease("timers", "replica-b", ttl, clock.now())
    refused = await store.try_lease("timers", "replica-a", ttl, clock.now())
    await store.release_lease("timers", "replica-b")
    regranted = await store.try_lease("timers", "replica-b", ttl, clock.now())

    assert first is not None and renewed is not None and taken is not None
    assert renewed.epoch == first.epoch
    assert taken.epoch == first.epoch + 1 and taken.owner == "replica-b"
    assert refused is None
    assert regranted is not None and regranted.epoch == taken.epoch + 1


async def test_a_fenced_write_from_a_superseded_holder_stores_nothing(store: EventStore) -> None:
    clock = FakeClock(T0)
    ttl = timedelta(seconds=3)
    deadline = NewTimer("timer-1", "payment_deadline", T0)
    await store.append(new_commit("order-1", 0, timers=(deadline,)))
    old = await store.try_lease("timers", "replica-a", ttl, clock.now())
    assert old is not None
    clock.advance(timedelta(seconds=4))
    new = await store.try_lease("timers", "replica-b", ttl, clock.now())
    assert new is not None
    effect = dataclasses.replace(new_commit("order-1", 1, causation_id="timer-1"), fence=old)

    with pytest.raises(LeaseLost):
        await store.append(effect)
    with pytest.raises(LeaseLost):
        await store.complete_timer("timer-1", old)
    with pytest.raises(LeaseLost):
        await store.mark_published([1], old)

    assert [c.last_version for c in await store.stream_commits("order-1")] == [1]
    assert [t.timer_id for t in await store.due_timers(T0 + timedelta(seconds=5))] == ["timer-1"]
    assert [c.position for c in await store.unpublished()] == [1]
    stored = await store.append(dataclasses.replace(effect, fence=new))
    await store.complete_timer("timer-1", new)
    await store.mark_published([1, stored.position], new)
    assert await store.due_timers(T0 + timedelta(seconds=5)) == []
    assert await store.unpublished() == []


async def test_a_closed_store_raises_store_unavailable(store: EventStore) -> None:
    await store.append(new_commit("order-1", 0))

    await store.close()

    with pytest.raises(StoreUnavailable):
        await store.append(new_commit("order-1", 1))
    with pytest.raises(StoreUnavailable):
        await store.load_stream("order-1")


async def test_a_failing_driver_surfaces_as_store_unavailable(backend: Backend) -> None:
    async def use_broken_store() -> None:
        broken = await backend.broken()
        if broken is None:
            pytest.skip(f"{backend.name} has no driver to fail")
        try:
            await broken.append(new_commit("order-1", 0))
        finally:
            await broken.close()

    with pytest.raises(StoreUnavailable):
        await use_broken_store()


async def test_mongo_adapter_without_a_reachable_server_raises_store_unavailable() -> None:
    """Real PyMongo against a closed port: the driver's timeout must not leak."""
    client: AsyncMongoClient[Any] = AsyncMongoClient(
        "mongodb://127.0.0.1:1", serverSelectionTimeoutMS=100
    )
    store = MongoEventStore(client["yellowcart"], client=client)

    with pytest.raises(StoreUnavailable):
        await store.append(new_commit("order-1", 0))
    await store.close()


def test_sealing_canonical_bytes_equals_the_kernel_chain_hash() -> None:
    wires = [event.wire() for event in new_commit("order-1", 0, count=3).events]
    wires[0]["data"]["note"] = 'kirim "cepat" ya \n terima kasih — 🙏'

    assert seal_canonical(GENESIS_HASH, canonical_json(wires)) == chain_hash(GENESIS_HASH, wires)


def test_verify_chain_reports_a_rewritten_link_and_a_missing_commit() -> None:
    first_events = new_commit("order-1", 0).events
    first = Commit(
        position=1,
        stream_id="order-1",
        first_version=1,
        events=tuple(first_events),
        topic="order.events",
        partition_key="order-1",
        causation_id=None,
        prev_hash=GENESIS_HASH,
        hash=chain_hash(GENESIS_HASH, [e.wire() for e in first_events]),
        published=False,
    )
    third_events = new_commit("order-1", 2).events
    third = dataclasses.replace(
        first,
        position=3,
        first_version=3,
        events=tuple(third_events),
        prev_hash="f" * 64,
        hash=chain_hash("f" * 64, [e.wire() for e in third_events]),
    )

    breaks = verify_chain([first, third])

    assert [(b.position, b.kind) for b in breaks] == [(3, "version_gap"), (3, "broken_link")]


@pytest.mark.parametrize(
    ("url", "kind"),
    [
        ("memory://", InMemoryEventStore),
        ("sqlite:///{tmp}/var/nested/order.db", SQLiteEventStore),
        ("sqlite:///:memory:", SQLiteEventStore),
    ],
)
async def test_a_store_url_opens_its_adapter(url: str, kind: type, tmp_path: Path) -> None:
    """`sqlite:///` + an absolute path gives `sqlite:////abs/…`; missing folders are created."""
    url = url.replace("{tmp}", str(tmp_path))
    store, documents = await open_event_store(url), await open_document_store(url)
    try:
        assert isinstance(store, kind)
        await store.append(new_commit("order-1", 0))
        await documents.put("orders", "order-1", {"status": "placed"})
        assert len(await store.load_stream("order-1")) == 1
        assert await documents.get("orders", "order-1") == {"status": "placed"}
    finally:
        await store.close()
        await documents.close()


async def test_an_unknown_store_url_is_refused_clearly() -> None:
    with pytest.raises(ValueError, match="unknown store URL"):
        await open_event_store("postgres://localhost/yellowcart")
    with pytest.raises(ValueError, match="unknown store URL"):
        await open_document_store("redis://localhost")


def test_a_mongodb_url_names_its_database() -> None:
    assert mongo_database_name("mongodb://db:27017/payment?replicaSet=rs0") == "payment"
    assert mongo_database_name("mongodb+srv://cluster.example.net/") == "yellowcart"


async def test_stored_hashes_are_the_historical_canonical_json_of_the_wire_forms(
    store: EventStore,
) -> None:
    """Hashes are SHA-256 over prev_hash and the standard library's canonical JSON of the wire
    forms, byte for byte, whatever serialiser an adapter uses: stored chains keep verifying."""
    tricky = {
        "note": 'kirim "cepat" ya \n terima kasih — 🙏 \u2028 \x7f',
        "ratio": 0.1,
        "tiny": 1e-05,
        "huge": 1e16,
        "nested": {"b": [1, None, True], "a": {"ä": "é", "Z": -0}},
    }
    first = new_commit("order-1", 0, count=2)
    plain = await store.append(first)
    second = NewCommit(
        stream_id="order-1",
        expected_version=2,
        events=[envelope("order-1", 3, **tricky)],
        topic="order.events",
        partition_key="order-1",
    )
    odd = await store.append(second)

    for stored, commit in ((plain, first), (odd, second)):
        wires = [event.model_dump(mode="json") for event in commit.events]
        expected = hashlib.sha256(stored.prev_hash.encode() + canonical_json(wires)).hexdigest()
        assert stored.hash == expected
    assert verify_chain(await store.stream_commits("order-1")) == []


async def test_sqlite_reads_integers_beyond_64_bits_back_exactly(tmp_path: Path) -> None:
    """MongoDB cannot store them; SQLite stores JSON text, and its reader must not turn them
    into floats (orjson's parser would), or the loaded events would no longer hash the same."""
    store = await SQLiteEventStore.open(str(tmp_path / "events.db"))
    try:
        commit = NewCommit(
            stream_id="order-1",
            expected_version=0,
            events=[envelope("order-1", 1, big=2**64, small=-(2**63) - 1)],
            topic="order.events",
            partition_key="order-1",
        )
        await store.append(commit)
        (loaded,) = await store.load_stream("order-1")
        assert loaded.data["big"] == 2**64 and loaded.data["small"] == -(2**63) - 1
        assert loaded == commit.events[0]
        assert verify_chain([c async for c in store.read_all()]) == []
    finally:
        await store.close()
