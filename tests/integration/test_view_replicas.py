"""Two replicas of the order view consumer write one order's view at the same time (each got
some of the four topics' partitions): the compare-and-set keeps every event in the view."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

from services.order.domain import Order
from services.order.handlers import OrderContext
from services.order.projection import COLLECTION, ORDER_VIEW
from shared.contracts.events import (
    PaymentDeadlineExpired,
    PenaltyApplied,
    SellerCancelReason,
    default_registry,
)
from shared.contracts.policy import Policy
from shared.kernel.application import Repository
from shared.kernel.clock import FakeClock
from shared.kernel.events.envelope import DomainEvent, Envelope
from shared.kernel.eventstore.memory import InMemoryEventStore
from shared.kernel.projection import project, project_many, rebuild
from shared.kernel.readmodel.sqlite import SQLiteDocumentStore

T0 = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)
ORDER = "ord-1"


async def replica(documents_path: Path) -> OrderContext:
    store, clock = InMemoryEventStore(), FakeClock(T0)
    return OrderContext(
        orders=Repository(store, Order, default_registry(), "order"),
        store=store,
        views=await SQLiteDocumentStore.open(str(documents_path)),
        clock=clock,
        policy=Policy(),
    )


def events_of_two_streams() -> list[tuple[Envelope, DomainEvent]]:
    pairs: list[tuple[Envelope, DomainEvent]] = []
    for n in range(1, 26):
        for stream, event in (
            (f"payment-{ORDER}", PaymentDeadlineExpired(order_id=ORDER, deadline_at=T0)),
            (
                f"seller-s-{n}",
                PenaltyApplied(
                    seller_id=f"s-{n}",
                    penalty_id=f"p-{n}",
                    order_id=ORDER,
                    reason=SellerCancelReason.OUT_OF_STOCK,
                    points=1,
                    expires_at=T0 + timedelta(days=90),
                    policy_version="id-test",
                ),
            ),
        ):
            version = n if stream.startswith("payment") else 1
            envelope = Envelope.of(
                event,
                stream_id=stream,
                stream_version=version,
                occurred_at=T0 + timedelta(seconds=n),
                producer=stream.split("-")[0],
                correlation_id=ORDER,
                causation_id=None,
            )
            pairs.append((envelope, event))
    return pairs


async def test_concurrent_view_writers_lose_no_event(tmp_path: Path) -> None:
    first, second = await replica(tmp_path / "order.db"), await replica(tmp_path / "order.db")
    pairs = events_of_two_streams()
    payments = [pair for pair in pairs if pair[0].stream_id.startswith("payment")]
    penalties = [pair for pair in pairs if not pair[0].stream_id.startswith("payment")]

    async def consume(ctx: OrderContext, share: list[tuple[Envelope, DomainEvent]]) -> None:
        for envelope, _event in share:
            await project(ctx.views, ORDER_VIEW, envelope)

    await asyncio.gather(consume(first, payments), consume(second, penalties))

    view = await first.views.get(COLLECTION, ORDER)
    assert view is not None
    assert len(view["timeline"]) == len(pairs) == view["revision"]
    assert {e["event_id"] for e in view["timeline"]} == {e.event_id for e, _ in pairs}
    for ctx in (first, second):
        await ctx.views.close()


async def test_a_redelivered_event_does_not_bump_the_revision(tmp_path: Path) -> None:
    ctx = await replica(tmp_path / "order.db")
    (envelope, _event), *_ = events_of_two_streams()
    await project(ctx.views, ORDER_VIEW, envelope)
    await project(ctx.views, ORDER_VIEW, envelope)
    view = await ctx.views.get(COLLECTION, ORDER)
    assert view is not None and view["revision"] == 1
    await ctx.views.close()


async def test_a_view_folded_in_batches_equals_its_rebuild_and_ignores_redelivery(
    tmp_path: Path,
) -> None:
    """A batch folds each document once; the result equals the rebuild from the log, and a
    redelivered batch changes nothing."""
    documents = await SQLiteDocumentStore.open(str(tmp_path / "order.db"))
    envelopes = [envelope for envelope, _ in events_of_two_streams()]
    for _ in range(2):  # the second time: everything redelivered
        for start in range(0, len(envelopes), 7):
            await project_many(documents, ORDER_VIEW, envelopes[start : start + 7])
    assert await documents.get(COLLECTION, ORDER) == rebuild(ORDER_VIEW, envelopes)[ORDER]
    await documents.close()
