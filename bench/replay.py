"""Replay benchmark: rebuilding the order view from the four stores, against a raw read.

Run `python -m bench.replay [--orders N]` (or `make bench-replay`, part of `make bench`).

Writes N orders' histories into four fresh SQLite stores (temporary files) with the real event
types of the four services, as the services would have stored them: per order an order stream
(OrderPlaced, OrderPaymentConfirmed, OrderShipped in three commits), a payment stream
(PaymentRequested, PaymentReceived) and, on the seller's penalty stream, SellerOrderCounted;
every fifth order is instead cancelled by its seller through the dispute service (a case
stream, OrderCancelled, RefundIssued, PenaltyApplied). Then, in the same process and run:

- **raw read**: plain `sqlite3` fetching every commit row of the four files (`SELECT *`,
  undecoded) — the floor any replay pays;
- **replay**: `operations.audit.rebuild_views` — `read_all` in batches over the four stores
  (decoding every commit into envelopes), folding every order's view (`OrderViewRebuild`).

Both are counted in events and timed best of three. Targets: replay >= 100,000 events/s and
>= 10 % of the raw read's rate.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import sqlite3
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from operations.audit import rebuild_views
from operations.catalog import SERVICES
from operations.stores import embedded_store_url
from shared.contracts.events import (
    DISPUTE_TOPIC,
    ORDER_TOPIC,
    PAYMENT_TOPIC,
    PENALTY_TOPIC,
    LineItem,
    OrderCancelled,
    OrderPaymentConfirmed,
    OrderPlaced,
    OrderShipped,
    PaymentReceived,
    PaymentRequested,
    PenaltyApplied,
    RefundIssued,
    SellerCancelApproved,
    SellerCancelRequested,
    SellerOrderCounted,
    ShippingAddress,
)
from shared.kernel.events.envelope import DomainEvent, Envelope
from shared.kernel.eventstore.port import EventStore, NewCommit
from shared.kernel.eventstore.sqlite import SQLiteEventStore
from shared.kernel.storage import open_event_store

RATE_TARGET = 100_000.0
RATIO_TARGET = 0.10
REPEATS = 3
START = datetime(2026, 3, 1, 9, 0, 0, 123_456, tzinfo=UTC)  # real clocks have microseconds
SELLERS = 200
REACTION_DELAY = timedelta(milliseconds=4)
ADDRESS = ShippingAddress(
    recipient="Siti Rahmawati",
    phone="081234567890",
    street="Jl. Jend. Sudirman Kav. 52-53",
    city="Jakarta Selatan",
    province="DKI Jakarta",
    postal_code="12190",
)


class Writer:
    """Appends each service's commits in the order a service would, one stream head each."""

    def __init__(self, stores: dict[str, EventStore]) -> None:
        self.stores = stores
        self.heads: dict[str, int] = {}

    async def append(
        self,
        service: str,
        topic: str,
        stream_id: str,
        key: str,
        at: datetime,
        events: list[DomainEvent],
        cause: Envelope | None = None,
    ) -> Envelope:
        head = self.heads.get(stream_id, 0)
        if cause is not None:  # a reaction is stored a few milliseconds after its cause
            at = max(at, cause.occurred_at + REACTION_DELAY)
        envelopes = [
            Envelope.of(
                event,
                stream_id=stream_id,
                stream_version=head + offset,
                occurred_at=at,
                producer=service,
                correlation_id=key,
                causation_id=cause.event_id if cause else None,
            )
            for offset, event in enumerate(events, start=1)
        ]
        await self.stores[service].append(
            NewCommit(stream_id, head, envelopes, topic, key, cause.event_id if cause else None)
        )
        self.heads[stream_id] = head + len(events)
        return envelopes[-1]


async def write_orders(stores: dict[str, EventStore], orders: int) -> int:
    writer = Writer(stores)
    for number in range(orders):
        order_id, seller_id = f"ord-{number:07d}", f"shop-{number % SELLERS}"
        at = START + timedelta(seconds=number)
        items = (
            LineItem(sku=f"KAOS-{number % 311}", variant="kuning/L", quantity=2, unit_price=75_000),
            LineItem(sku=f"TOPI-{number % 97}", variant="hitam", quantity=1, unit_price=28_000),
        )
        placed = await writer.append(
            "order",
            ORDER_TOPIC,
            f"order-{order_id}",
            order_id,
            at,
            [
                OrderPlaced(
                    order_id=order_id,
                    buyer_id=f"buyer-{number % 977}",
                    seller_id=seller_id,
                    items=items,
                    shipping_address=ADDRESS,
                    payment_method="bank_transfer",
                    total_amount=178_000,
                )
            ],
        )
        counted = SellerOrderCounted(seller_id=seller_id, order_id=order_id, placed_at=at)
        await writer.append(
            "penalty", PENALTY_TOPIC, f"seller-{seller_id}", seller_id, at, [counted], placed
        )
        requested = await writer.append(
            "payment",
            PAYMENT_TOPIC,
            f"payment-{order_id}",
            order_id,
            at,
            [
                PaymentRequested(
                    order_id=order_id,
                    buyer_id=f"buyer-{number % 977}",
                    seller_id=seller_id,
                    amount=178_000,
                    method="bank_transfer",
                    deadline_at=at + timedelta(days=1),
                    virtual_account=f"8808{number:012d}",
                    policy_version="id-3f9a2c",
                )
            ],
            placed,
        )
        paid_at = at + timedelta(minutes=7)
        reference = f"gw-{number:09d}"
        received = await writer.append(
            "payment",
            PAYMENT_TOPIC,
            f"payment-{order_id}",
            order_id,
            paid_at,
            [
                PaymentReceived(
                    order_id=order_id,
                    gateway_reference=reference,
                    amount=178_000,
                    paid_at=paid_at,
                )
            ],
            requested,
        )
        await writer.append(
            "order",
            ORDER_TOPIC,
            f"order-{order_id}",
            order_id,
            paid_at,
            [
                OrderPaymentConfirmed(
                    order_id=order_id, amount=178_000, gateway_reference=reference, paid_at=paid_at
                )
            ],
            received,
        )
        later = paid_at + timedelta(hours=3)
        if number % 5:
            await writer.append(
                "order",
                ORDER_TOPIC,
                f"order-{order_id}",
                order_id,
                later,
                [OrderShipped(order_id=order_id, seller_id=seller_id, tracking_number="JNE-1")],
            )
            continue
        filing = f"{order_id}.f1"
        filed = await writer.append(
            "seller-dispute",
            DISPUTE_TOPIC,
            f"case-{order_id}",
            order_id,
            later,
            [
                SellerCancelRequested(
                    order_id=order_id,
                    filing_id=filing,
                    seller_id=seller_id,
                    reason="out_of_stock",
                    review_mode="manual",
                    policy_version="id-3f9a2c",
                )
            ],
        )
        approved = await writer.append(
            "seller-dispute",
            DISPUTE_TOPIC,
            f"case-{order_id}",
            order_id,
            later + timedelta(minutes=20),
            [
                SellerCancelApproved(
                    order_id=order_id,
                    filing_id=filing,
                    seller_id=seller_id,
                    buyer_id=f"buyer-{number % 977}",
                    reason="out_of_stock",
                    seller_fault=True,
                    decided_by="operator-1",
                    policy_version="id-3f9a2c",
                )
            ],
            filed,
        )
        cancelled = await writer.append(
            "order",
            ORDER_TOPIC,
            f"order-{order_id}",
            order_id,
            later + timedelta(minutes=20),
            [
                OrderCancelled(
                    order_id=order_id,
                    buyer_id=f"buyer-{number % 977}",
                    seller_id=seller_id,
                    cancelled_by="seller",
                    reason="out_of_stock",
                    was_paid=True,
                    seller_fault=True,
                )
            ],
            approved,
        )
        await writer.append(
            "payment",
            PAYMENT_TOPIC,
            f"payment-{order_id}",
            order_id,
            later + timedelta(minutes=21),
            [
                RefundIssued(
                    order_id=order_id,
                    refund_id=f"{reference}.refund",
                    gateway_reference=reference,
                    amount=178_000,
                    reason="order_cancelled",
                )
            ],
            cancelled,
        )
        await writer.append(
            "penalty",
            PENALTY_TOPIC,
            f"seller-{seller_id}",
            seller_id,
            later + timedelta(minutes=21),
            [
                PenaltyApplied(
                    seller_id=seller_id,
                    penalty_id=f"{order_id}.p",
                    order_id=order_id,
                    reason="out_of_stock",
                    points=3,
                    expires_at=later + timedelta(days=90),
                    policy_version="id-3f9a2c",
                )
            ],
            cancelled,
        )
    return sum(writer.heads.values())


def raw_read(directory: Path) -> int:
    """Every commit row of the four files, undecoded; returns the events they hold."""
    events = 0
    for service in SERVICES:
        with sqlite3.connect(directory / f"{service.replace('-', '_')}.db") as connection:
            for first, last, *_ in connection.execute(
                "SELECT first_version, last_version, * FROM commits ORDER BY position"
            ).fetchall():
                events += last - first + 1
    return events


async def replay(directory: Path) -> int:
    stores = {
        name: await open_event_store(embedded_store_url(directory, name)) for name in SERVICES
    }
    try:
        views = await rebuild_views(stores)
        return sum(view["revision"] for view in views.values())
    finally:
        for store in stores.values():
            await store.close()


def best_of(run: Callable[[], int]) -> tuple[int, float]:
    timings = []
    for _ in range(REPEATS):
        gc.collect()
        began = time.perf_counter()
        count = run()
        timings.append((count, time.perf_counter() - began))
    return min(timings, key=lambda timing: timing[1])


async def write(directory: Path, orders: int) -> int:
    stores: dict[str, EventStore] = {
        name: await SQLiteEventStore.open(str(directory / f"{name.replace('-', '_')}.db"))
        for name in SERVICES
    }
    try:
        return await write_orders(stores, orders)
    finally:
        for store in stores.values():
            await store.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--orders", type=int, default=30_000)
    arguments = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="yellowcart-bench-replay-") as name:
        directory = Path(name)
        began = time.perf_counter()
        written = asyncio.run(write(directory, arguments.orders))
        print(
            f"wrote {arguments.orders:,} orders, {written:,} events into four stores "
            f"in {time.perf_counter() - began:.1f} s"
        )
        raw_events, raw_s = best_of(lambda: raw_read(directory))
        replayed, replay_s = best_of(lambda: asyncio.run(replay(directory)))
    assert raw_events == written == replayed, (raw_events, written, replayed)
    raw_rate, replay_rate = raw_events / raw_s, replayed / replay_s
    ratio = replay_rate / raw_rate
    print(f"{'raw sqlite3 read (SELECT *, undecoded)':<44}{raw_rate:>12,.0f} events/s")
    print(f"{'replay (read_all + order view fold)':<44}{replay_rate:>12,.0f} events/s")
    print(f"replay rate                 {_verdict(replay_rate, RATE_TARGET, '{:,.0f}/s')}")
    print(f"replay / raw read           {_verdict(ratio, RATIO_TARGET, '{:.2f}x')}")


def _verdict(value: float, target: float, shape: str) -> str:
    met = "met" if value >= target else "MISSED"
    return f"{shape.format(value)}  (target >= {shape.format(target)}: {met})"


if __name__ == "__main__":
    main()
