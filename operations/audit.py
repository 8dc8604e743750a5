"""Audit, verify, replay and republish: read the stores, prove the chains, publish nothing.

Each service's store is the log of record. An audit reads the streams of one order from all
four stores, verifies every stream's hash chain, and folds the events with the same projection
the order view uses (so `--as-of` shows the view as it was). Replays rebuild the order view
into a fresh collection and diff it with the live one; they never publish, refund or fire.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from typing import Any

from rich.console import Console
from rich.table import Table

from operations.catalog import SERVICES
from services.order.domain import Order
from services.order.projection import COLLECTION, ORDER_VIEW, View, order_id_of
from services.payment.domain import PaymentIntent
from services.penalty.domain import SellerRecord
from services.seller_dispute.domain import CancellationCase
from shared.kernel.clock import utc
from shared.kernel.eventstore.chain import verify_chain
from shared.kernel.eventstore.port import Commit, EventStore
from shared.kernel.messaging import make_producer
from shared.kernel.outbox import republish
from shared.kernel.projection import rebuild
from shared.kernel.settings import Settings
from shared.kernel.storage import open_document_store, open_event_store

REPLAY_COLLECTION = f"{COLLECTION}_replay"


async def _stores(settings: Settings) -> dict[str, EventStore]:
    return {name: await open_event_store(settings.store_url_for(name)) for name in SERVICES}


async def _close(stores: dict[str, EventStore]) -> None:
    for store in stores.values():
        await store.close()


async def audit_order(settings: Settings, order_id: str, as_of: datetime | None) -> dict[str, Any]:
    stores = await _stores(settings)
    try:
        order_stream = Order.stream_id_for(order_id)
        streams: dict[str, list[Commit]] = {
            order_stream: await stores["order"].stream_commits(order_stream),
        }
        for service, stream in (
            ("payment", PaymentIntent.stream_id_for(order_id)),
            ("seller-dispute", CancellationCase.stream_id_for(order_id)),
        ):
            streams[stream] = await stores[service].stream_commits(stream)
        order_events = [e for c in streams[order_stream] for e in c.events]
        seller_id = order_events[0].data.get("seller_id") if order_events else None
        if seller_id:
            seller_stream = SellerRecord.stream_id_for(seller_id)
            streams[seller_stream] = await stores["penalty"].stream_commits(seller_stream)
    finally:
        await _close(stores)
    chains = {
        stream: {
            "commits": len(commits),
            "breaks": [vars(b) for b in verify_chain(commits)],
        }
        for stream, commits in streams.items()
    }
    envelopes = [
        envelope
        for commits in streams.values()
        for commit in commits
        for envelope in commit.events
        if order_id_of(envelope) == order_id
        and (as_of is None or envelope.occurred_at <= utc(as_of))
    ]
    view: View | None = rebuild(ORDER_VIEW, envelopes).get(order_id)
    return {
        "order_id": order_id,
        "found": bool(order_events),
        "as_of": as_of.isoformat() if as_of else None,
        "chain_ok": all(not chain["breaks"] for chain in chains.values()),
        "streams": chains,
        "view": {k: v for k, v in (view or {}).items() if k not in ("timeline", "applied")},
        "timeline": (view or {}).get("timeline", []),
    }


def print_audit(report: dict[str, Any], console: Console) -> None:
    if not report["found"]:
        console.print(f"[red]no order {report['order_id']} in the order store[/]")
    chains = Table("stream", "commits", "hash chain", title=f"audit of {report['order_id']}")
    for stream, chain in report["streams"].items():
        verdict = "[green]intact[/]" if not chain["breaks"] else f"[red]{chain['breaks']}[/]"
        chains.add_row(stream, str(chain["commits"]), verdict)
    console.print(chains)
    console.print(
        timeline_table(report["timeline"], f"timeline (as of {report['as_of'] or 'now'})")
    )
    view = report["view"]
    if view:
        console.print(
            f"status: [bold]{view.get('status')}[/]  payment: {view['payment'].get('status')}  "
            f"cancellation: {view.get('cancellation')}"
        )


def timeline_table(timeline: list[dict[str, Any]], title: str) -> Table:
    table = Table("at", "service", "event", "details", title=title)
    for entry in timeline:
        data = entry["data"]
        details = ", ".join(
            f"{key}={data[key]}"
            for key in (
                "cancelled_by",
                "reason",
                "amount",
                "deadline_at",
                "points",
                "decided_by",
                "order_status",
                "standing",
            )
            if key in data
        )
        table.add_row(entry["at"], entry["producer"], entry["event_type"], details)
    return table


async def verify_all(settings: Settings, console: Console) -> int:
    stores = await _stores(settings)
    table = Table("service", "streams", "commits", "breaks", title="hash chains")
    total_breaks = 0
    try:
        for name, store in stores.items():
            by_stream: dict[str, list[Commit]] = defaultdict(list)
            async for commit in store.read_all():
                by_stream[commit.stream_id].append(commit)
            breaks = [b for commits in by_stream.values() for b in verify_chain(commits)]
            total_breaks += len(breaks)
            table.add_row(
                name, str(len(by_stream)), str(sum(map(len, by_stream.values()))), str(len(breaks))
            )
            for chain_break in breaks:
                console.print(f"[red]{name}: {chain_break}[/]")
    finally:
        await _close(stores)
    console.print(table)
    return total_breaks


async def rebuild_views(stores: dict[str, EventStore]) -> dict[str, View]:
    """Every order view folded from the stores' logs; no side effect anywhere."""
    views: dict[str, View] = {}
    for store in stores.values():
        async for commit in store.read_all():
            rebuild(ORDER_VIEW, commit.events, into=views)
    return views


async def replay_views(settings: Settings, swap: bool, console: Console) -> int:
    stores = await _stores(settings)
    documents = await open_document_store(settings.store_url_for("order"))
    try:
        views = await rebuild_views(stores)
        await documents.drop(REPLAY_COLLECTION)
        for order_id, view in views.items():
            await documents.put(REPLAY_COLLECTION, order_id, view)
        live = {view["order_id"]: view for view in await documents.find(COLLECTION)}
        differing = sorted(
            order_id
            for order_id in set(views) | set(live)
            if views.get(order_id) != live.get(order_id)
        )
        console.print(
            f"rebuilt {len(views)} order views into '{REPLAY_COLLECTION}'; "
            f"{len(differing)} differ from the live view"
        )
        for order_id in differing[:20]:
            console.print(f"  differs: {order_id}")
        if swap:
            await documents.copy(REPLAY_COLLECTION, COLLECTION)
            console.print("swapped the rebuilt view in")
        return len(differing)
    finally:
        await documents.close()
        await _close(stores)


async def republish_service(settings: Settings, service: str) -> int:
    store = await open_event_store(settings.store_url_for(service))
    producer = make_producer(settings)
    await producer.start()
    try:
        return await republish(store, producer)
    finally:
        await producer.stop()
        await store.close()
