"""Two reactions to one event inside one service: each records its own effect once, and a
redelivery is absorbed per reaction (the de-duplication key is (handler, event)).

Before the key included the handler, the second reaction's commit carried the same causation
id as the first and was refused as a duplicate: its effect was silently lost."""

from __future__ import annotations

from datetime import UTC, datetime

from shared.contracts.events import SellerOrderCounted, default_registry
from shared.kernel.aggregate import Aggregate
from shared.kernel.application import Cause, Repository, handle_event
from shared.kernel.events.envelope import DomainEvent, Envelope
from shared.kernel.eventstore.memory import InMemoryEventStore

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


class Tally(Aggregate):
    """Counts whatever it is told to, with no idempotence of its own: only the store's
    de-duplication keeps a redelivered event from counting twice."""

    stream_prefix = "tally"

    def __init__(self, aggregate_id: str) -> None:
        super().__init__(aggregate_id)
        self.counted: list[str] = []

    def count(self, order_id: str) -> None:
        self.record(SellerOrderCounted(seller_id=self.id, order_id=order_id, placed_at=T0))

    def apply(self, event: DomainEvent) -> None:
        assert isinstance(event, SellerOrderCounted)
        self.counted.append(event.order_id)


def placed(order_id: str) -> Envelope:
    return Envelope(
        event_type="OrderPlaced",
        schema_version=1,
        stream_id=f"order-{order_id}",
        stream_version=1,
        occurred_at=T0,
        producer="order",
        correlation_id=order_id,
        data={"order_id": order_id},
    )


def count(order_id: str):  # type: ignore[no-untyped-def]
    def decide(tally: Tally | None) -> Tally:
        tally = tally or Tally("shop-1")
        tally.count(order_id)
        return tally

    return decide


async def test_two_reactions_to_one_event_in_one_service_each_record_once() -> None:
    store = InMemoryEventStore()
    tallies = Repository(store, Tally, default_registry(), "penalty")
    envelope = placed("ord-1")

    for _ in range(2):  # the event is delivered twice
        for handler in ("orders-per-shop", "orders-for-the-live-stream"):
            await handle_event(
                tallies, "shop-1", count("ord-1"), Cause.event(handler, envelope, T0)
            )

    commits = [commit async for commit in store.read_all()]
    assert [(c.handler, c.causation_id) for c in commits] == [
        ("orders-per-shop", envelope.event_id),
        ("orders-for-the-live-stream", envelope.event_id),
    ]
    tally = await tallies.get("shop-1")
    assert tally is not None and tally.counted == ["ord-1", "ord-1"]


class CountingStore(InMemoryEventStore):
    """The in-memory store, counting the events each load hands out."""

    def __init__(self) -> None:
        super().__init__()
        self.loaded = 0

    async def load_stream(self, stream_id: str, after_version: int = 0) -> list[Envelope]:
        events = await super().load_stream(stream_id, after_version)
        self.loaded += len(events)
        return events


async def test_a_cached_aggregate_reads_only_what_was_stored_after_it() -> None:
    store = CountingStore()
    tallies = Repository(store, Tally, default_registry(), "penalty", cache_size=10)
    for n in range(50):
        cause = Cause.event("orders-per-shop", placed(f"ord-{n}"), T0)
        await handle_event(tallies, "shop-1", count(f"ord-{n}"), cause)
    assert store.loaded == 0  # every reaction started from the aggregate it saved last

    other_replica = Repository(store, Tally, default_registry(), "penalty")
    cause = Cause.event("orders-per-shop", placed("ord-50"), T0)
    await handle_event(other_replica, "shop-1", count("ord-50"), cause)
    store.loaded = 0
    tally = await tallies.get("shop-1")
    assert tally is not None and len(tally.counted) == 51 and tally.version == 51
    assert store.loaded == 1  # only the event the other replica appended


async def test_an_aggregate_whose_save_failed_is_not_kept() -> None:
    store = CountingStore()
    tallies = Repository(store, Tally, default_registry(), "penalty", cache_size=10)
    envelope = placed("ord-1")
    await handle_event(tallies, "shop-1", count("ord-1"), Cause.event("h", envelope, T0))
    await handle_event(tallies, "shop-1", count("ord-1"), Cause.event("h", envelope, T0))
    tally = await tallies.get("shop-1")  # the duplicate's unsaved count is not in memory
    assert tally is not None and tally.counted == ["ord-1"] and tally.version == 1
