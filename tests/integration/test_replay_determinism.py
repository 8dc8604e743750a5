"""Deterministic projections and side-effect-free replays.

One mixed scenario is run with events delivered round robin across the services; the order
views it built must equal, byte for byte, the views rebuilt from the four stores in other
interleavings. The rebuild writes nothing anywhere, and the audit proves the hash chains — until
one stored event is edited behind the store's back.
"""

from __future__ import annotations

import random
import sqlite3
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from operations.audit import audit_order, rebuild_views
from operations.stores import close_stores, open_service_stores, service_store_urls
from services.order.handlers import CancelOrder, ShipOrder, cancel_by_buyer, ship
from services.order.projection import COLLECTION, ORDER_VIEW, View, order_id_of
from services.seller_dispute.handlers import (
    DecideFiling,
    FileCancellation,
    RequestCancellation,
    decide,
    file_cancellation,
    request_cancellation,
)
from shared.contracts.events import BuyerCancelReason, PaymentMethod, SellerCancelReason
from shared.kernel.events.canonical import canonical_json
from shared.kernel.events.envelope import Envelope
from shared.kernel.eventstore.port import Commit, DueTimer
from shared.kernel.settings import Settings
from tests.integration.harness import BUYER, OPERATOR, SELLER, Bus, running_bus

MINUTE = timedelta(minutes=1)


@dataclass(frozen=True)
class Scenario:
    shipped: str
    cancelled_then_paid: str
    expired_then_paid: str
    seller_cancelled: str
    cash_on_delivery: str
    request_lapsed: str
    before_cancellation: datetime  # a moment between placing and cancelling `cancelled_then_paid`


async def mixed_scenario(bus: Bus) -> Scenario:
    """Six orders, each ending differently; the clock moves between most steps, and every
    event is delivered twice, round robin across the services."""

    async def step() -> None:
        await bus.pump(interleave="round_robin", twice=True)
        bus.clock.advance(MINUTE)

    async def placed(method: PaymentMethod = PaymentMethod.BANK_TRANSFER) -> str:
        order_id = await bus.place_order(method)
        bus.clock.advance(MINUTE)
        return order_id

    shipped, cancelled, expired, seller, cod, lapsed = [await placed() for _ in range(4)] + [
        await placed(PaymentMethod.COD),
        await placed(),
    ]
    for order_id in (shipped, seller, lapsed):
        await bus.pay(order_id)
    await step()
    await ship(bus.order, ShipOrder(SELLER, shipped, "JNE-1", at=bus.clock.now()))
    await ship(bus.order, ShipOrder(SELLER, cod, "JNE-2", at=bus.clock.now()))
    before_cancellation = bus.clock.now()
    bus.clock.advance(MINUTE)
    await cancel_by_buyer(
        bus.order,
        CancelOrder(BUYER, cancelled, BuyerCancelReason.FOUND_CHEAPER, None, at=bus.clock.now()),
    )
    await step()
    await bus.pay(cancelled)  # late: refunded
    case = await file_cancellation(
        bus.dispute,
        FileCancellation(
            SELLER, seller, SellerCancelReason.OUT_OF_STOCK, "sold out", None, at=bus.clock.now()
        ),
    )
    await step()
    await decide(
        bus.dispute,
        DecideFiling(OPERATOR, case.filings[-1].filing_id, True, None, at=bus.clock.now()),
    )
    await request_cancellation(
        bus.dispute,
        RequestCancellation(
            BUYER, lapsed, BuyerCancelReason.CHANGE_ADDRESS, None, at=bus.clock.now()
        ),
    )
    await step()
    bus.clock.advance(timedelta(days=1))
    for service in ("payment", "seller-dispute", "penalty"):
        await bus.run_timers(service)
    await step()
    await bus.pay(expired)  # after its deadline fired: refunded
    await step()
    return Scenario(shipped, cancelled, expired, seller, cod, lapsed, before_cancellation)


@pytest.fixture
async def bus(tmp_path: Path) -> AsyncIterator[Bus]:
    async with running_bus(tmp_path) as bus:
        yield bus


@pytest.fixture
async def scenario(bus: Bus) -> Scenario:
    return await mixed_scenario(bus)


def canonical(views: Iterable[View]) -> bytes:
    return canonical_json(sorted(views, key=lambda view: view["order_id"]))


def fold(envelopes: Iterable[Envelope]) -> list[View]:
    views: dict[str, View] = {}
    for envelope in envelopes:
        order_id = order_id_of(envelope)
        if order_id is not None:
            views[order_id] = ORDER_VIEW.apply(views.get(order_id), envelope) or views[order_id]
    return list(views.values())


def shuffled_keeping_stream_order(commits: list[Commit], shuffle: int) -> list[Envelope]:
    """Any interleaving of the streams, each stream still in its own order (what Kafka keeps)."""
    queues: dict[str, list[Envelope]] = {}
    for commit in commits:
        queues.setdefault(commit.stream_id, []).extend(commit.events)
    rng = random.Random(shuffle)
    envelopes = []
    while queues:
        stream = rng.choice(sorted(queues))
        envelopes.append(queues[stream].pop(0))
        if not queues[stream]:
            del queues[stream]
    return envelopes


async def audited(settings: Settings, order_id: str, as_of: datetime | None) -> dict[str, Any]:
    """`yellowcart audit` as the tool runs it: its own connections to the four stores."""
    stores = await open_service_stores(service_store_urls(settings, None))
    try:
        return await audit_order(stores, order_id, as_of)
    finally:
        await close_stores(stores)


async def all_commits(bus: Bus) -> list[Commit]:
    return [commit for store in bus.stores().values() async for commit in store.read_all()]


async def test_rebuilt_views_equal_the_live_views_byte_for_byte(
    bus: Bus, scenario: Scenario
) -> None:
    live = await bus.order.views.find(COLLECTION)
    assert {view["status"] for view in live} == {"shipped", "cancelled", "to_ship"}
    assert len(live) == 6

    rebuilt = await rebuild_views(bus.stores())  # store by store: topic by topic
    assert canonical(rebuilt.values()) == canonical(live)

    commits = await all_commits(bus)
    for shuffle in range(5):
        assert canonical(fold(shuffled_keeping_stream_order(commits, shuffle))) == canonical(live)


async def test_a_rebuild_publishes_nothing_and_fires_no_timer(bus: Bus, scenario: Scenario) -> None:
    await ship(
        bus.order, ShipOrder(SELLER, scenario.request_lapsed, "JNE-3", at=bus.clock.now())
    )  # not yet published
    far_future = bus.clock.now() + timedelta(days=365)

    async def outbox_and_timers() -> tuple[dict[str, list[Commit]], dict[str, list[DueTimer]]]:
        stores = bus.stores().items()
        return (
            {name: await store.unpublished() for name, store in stores},
            {name: await store.due_timers(far_future) for name, store in stores},
        )

    positions = await bus.commit_positions()
    outbox, timers = await outbox_and_timers()
    assert outbox["order"], "a commit waits in the order outbox"
    assert timers["penalty"], "penalty expiries are pending"

    await rebuild_views(bus.stores())
    await rebuild_views(bus.stores())

    assert await bus.commit_positions() == positions
    assert await outbox_and_timers() == (outbox, timers)


async def test_audit_proves_the_chain_until_an_event_is_edited(
    bus: Bus, scenario: Scenario, tmp_path: Path
) -> None:
    settings = bus.tool_settings()
    order_id = scenario.cancelled_then_paid

    report = await audited(settings, order_id, None)
    assert report["found"] and report["chain_ok"]
    assert report["view"]["status"] == "cancelled"
    assert [refund["reason"] for refund in report["view"]["payment"]["refunds"]] == ["late_payment"]
    earlier = await audited(settings, order_id, scenario.before_cancellation)
    assert earlier["view"]["status"] == "awaiting_payment"
    assert earlier["view"]["cancellation"] is None

    with sqlite3.connect(tmp_path / "order.db") as db:
        edited = db.execute(
            "UPDATE commits SET events = replace(events, ?, ?) "
            "WHERE stream_id = ? AND first_version = 1",
            ('"total_amount":178000', '"total_amount":1000', f"order-{order_id}"),
        ).rowcount
    assert edited == 1

    tampered = await audited(settings, order_id, None)
    assert not tampered["chain_ok"]
    breaks = tampered["streams"][f"order-{order_id}"]["breaks"]
    assert [b["kind"] for b in breaks] == ["hash_mismatch"]
    assert all(
        not chain["breaks"]
        for stream, chain in tampered["streams"].items()
        if stream != f"order-{order_id}"
    )
