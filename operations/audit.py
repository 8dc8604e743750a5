"""Audit, verify, checkpoint, replay and republish: read the stores, prove the chains.

Each service's store is the log of record; every tool here takes the four stores from
`operations.stores` (named explicitly, distinct, each holding its own service's streams) and
reads them in bounded batches (`read_all`), keeping per stream only its head, so memory does
not grow with the length of the log (a replay's output, the views, is the exception).

- An audit reads the streams of one order from all four stores, verifies each stream's hash
  chain, and folds the events with the same projection the order view uses (`--as-of` shows
  the view as it was).
- `verify` checks every chain and, given a signed checkpoint, that the log still extends it.
- A replay rebuilds the order view beside the live one, verifies what it wrote, diffs it, and
  on `--swap` replaces the live view in one transaction after keeping a copy of it; it refuses
  to swap in a view that would lose events the live view holds. Nothing is published,
  refunded or fired.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from rich.console import Console
from rich.table import Table

from operations.checkpoint import Checkpoint, CheckpointMismatch, ExtensionCheck
from operations.stores import STREAM_PREFIXES, check_owner
from services.order.domain import Order
from services.order.projection import COLLECTION, ORDER_VIEW, OrderViewRebuild, View, order_id_of
from services.payment.domain import PaymentIntent
from services.penalty.domain import SellerRecord
from services.seller_dispute.domain import CancellationCase
from shared.kernel.clock import utc
from shared.kernel.eventstore.chain import ChainBreak, ChainVerifier, StreamHead, verify_chain
from shared.kernel.eventstore.port import Commit, EventStore
from shared.kernel.messaging.kafka import RecordSender
from shared.kernel.outbox import republish
from shared.kernel.projection import rebuild
from shared.kernel.readmodel.port import DocumentStore

REPLAY_COLLECTION = f"{COLLECTION}_replay"
BACKUP_COLLECTION = f"{COLLECTION}_before_swap"
READ_BATCH = 1000  # commits per read: the bound on what a tool holds of the log at once

Advance = Callable[[int], None]


def _ignore(_: int) -> None:
    return None


# --- audit --------------------------------------------------------------------------------


async def audit_order(
    stores: dict[str, EventStore],
    order_id: str,
    as_of: datetime | None,
    checkpoint: Checkpoint | None = None,
) -> dict[str, Any]:
    order_stream = Order.stream_id_for(order_id)
    streams: dict[str, tuple[str, list[Commit]]] = {
        order_stream: ("order", await stores["order"].stream_commits(order_stream)),
    }
    for service, stream in (
        ("payment", PaymentIntent.stream_id_for(order_id)),
        ("seller-dispute", CancellationCase.stream_id_for(order_id)),
    ):
        streams[stream] = (service, await stores[service].stream_commits(stream))
    order_events = [e for c in streams[order_stream][1] for e in c.events]
    seller_id = order_events[0].data.get("seller_id") if order_events else None
    if seller_id:
        seller_stream = SellerRecord.stream_id_for(seller_id)
        streams[seller_stream] = ("penalty", await stores["penalty"].stream_commits(seller_stream))
    extension = ExtensionCheck(checkpoint) if checkpoint else None
    chains: dict[str, dict[str, Any]] = {}
    for stream, (service, commits) in streams.items():
        status: str | None = None
        if extension is not None:
            if stream not in extension.checkpoint.heads.get(service, {}):
                status = "not sealed"
            else:
                for commit in commits:
                    extension.check(service, commit)
                found = extension.finish({service}, {(service, stream)})
                status = next((str(m) for m in found if m.stream_id == stream), "extended")
        chains[stream] = {
            "service": service,
            "commits": len(commits),
            "breaks": [break_record(service, b) for b in verify_chain(commits)],
            "checkpoint": status,
        }
    envelopes = [
        envelope
        for _, commits in streams.values()
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
        "checkpoint": (
            {"sealed_at": checkpoint.sealed_at, "key_pinned": checkpoint.key_pinned}
            if checkpoint
            else None
        ),
        "checkpoint_ok": all(
            chain["checkpoint"] in (None, "extended", "not sealed") for chain in chains.values()
        ),
        "streams": chains,
        "view": {k: v for k, v in (view or {}).items() if k not in ("timeline", "applied")},
        "timeline": (view or {}).get("timeline", []),
    }


def break_record(service: str, chain_break: ChainBreak) -> dict[str, Any]:
    return {
        "service": service,
        "stream_id": chain_break.stream_id,
        "version": chain_break.first_version,
        "position": chain_break.position,
        "kind": chain_break.kind,
        "detail": chain_break.detail,
    }


# --- verify and checkpoint ----------------------------------------------------------------


@dataclass
class StoreSummary:
    service: str
    streams: int = 0
    commits: int = 0
    events: int = 0


@dataclass
class VerifyReport:
    stores: list[StoreSummary] = field(default_factory=list)
    breaks: list[dict[str, Any]] = field(default_factory=list)
    heads: dict[str, dict[str, StreamHead]] = field(default_factory=dict)
    checkpoint: Checkpoint | None = None
    mismatches: list[CheckpointMismatch] = field(default_factory=list)

    @property
    def chain_ok(self) -> bool:
        return not self.breaks

    @property
    def extends_checkpoint(self) -> bool:
        return not self.mismatches

    def as_json(self) -> dict[str, Any]:
        return {
            "chain_ok": self.chain_ok,
            "stores": [vars(summary) for summary in self.stores],
            "breaks": self.breaks,
            "checkpoint": None
            if self.checkpoint is None
            else {
                "sealed_at": self.checkpoint.sealed_at,
                "key_pinned": self.checkpoint.key_pinned,
                "extended": self.extends_checkpoint,
                "mismatches": [vars(mismatch) for mismatch in self.mismatches],
            },
        }


async def verify_stores(
    stores: dict[str, EventStore],
    checkpoint: Checkpoint | None = None,
    advance: Advance = _ignore,
    *,
    keep_heads: bool = False,
) -> VerifyReport:
    """Every commit of every store once, stream after stream in bounded batches: each stream's
    chain, each commit's owner, and (given a checkpoint) that every sealed head is still in the
    log. Only the stream being read is held, so memory stays flat however long the log;
    `keep_heads` keeps every stream's head for a checkpoint (its output)."""
    report = VerifyReport(checkpoint=checkpoint)
    extension = ExtensionCheck(checkpoint) if checkpoint else None
    for service, store in stores.items():
        verifier = ChainVerifier()
        summary = StoreSummary(service)
        current: str | None = None
        async for commit in store.read_by_stream(batch_size=READ_BATCH):
            if commit.stream_id != current:
                if current is not None and not keep_heads:
                    verifier.heads.pop(current, None)
                current = commit.stream_id
                check_owner(service, current)
                summary.streams += 1
            report.breaks.extend(break_record(service, b) for b in verifier.check(commit))
            if extension is not None:
                extension.check(service, commit)
            summary.commits += 1
            summary.events += len(commit.events)
            advance(len(commit.events))
        report.stores.append(summary)
        if keep_heads:
            report.heads[service] = verifier.heads
    if extension is not None:
        report.mismatches = extension.finish(set(stores))
    return report


# --- replay -------------------------------------------------------------------------------


async def rebuild_views(
    stores: dict[str, EventStore], advance: Advance = _ignore
) -> dict[str, View]:
    """Every order view folded from the stores' logs; no side effect anywhere.

    The four stores are read concurrently: each store's reads run on its connection's thread
    while this one decodes and folds another's batch. The result does not depend on how the
    stores interleave (each stream lives in one store, read in its order, and the view orders
    its timeline causally), so it equals a store-by-store rebuild."""
    rebuilt = OrderViewRebuild()
    add = rebuilt.add_wire

    async def read(service: str, store: EventStore) -> None:
        own = STREAM_PREFIXES[service] + "-"
        async for stream_id, events in store.read_all_wire(batch_size=READ_BATCH):
            if not stream_id.startswith(own):
                check_owner(service, stream_id)
            for wire in events:
                add(wire)
            advance(len(events))

    with _cycle_collector_paused():
        await asyncio.gather(*(read(service, store) for service, store in stores.items()))
        return dict(rebuilt.views())


@contextlib.contextmanager
def _cycle_collector_paused() -> Iterator[None]:
    """A rebuild keeps every timeline entry and view alive until it returns: millions of
    containers, none in a reference cycle. Python's cycle collector would walk all of them on
    every full collection, again and again as they grow (a profile of the replay benchmark
    put a fifth of the rebuild's time there: 52,000 → 66,000 events/s without it), so it is
    paused for the rebuild; their memory is freed by reference counting as usual."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


@dataclass
class ReplayReport:
    rebuilt: int
    live: int
    differing: list[str]
    would_lose: dict[str, list[str]]  # order -> streams whose events the live view has and
    # the rebuilt one lacks
    written: bool = False
    swapped: bool = False
    problems: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return vars(self)


def losses(live: View, rebuilt: View | None) -> list[str]:
    """The streams whose applied events the live view has and `rebuilt` lacks."""
    if rebuilt is None:
        return sorted(live.get("applied", {})) or ["(the whole order)"]
    return sorted(
        stream
        for stream, version in live.get("applied", {}).items()
        if rebuilt["applied"].get(stream, 0) < version
    )


async def check_written(
    documents: DocumentStore, collection: str, views: dict[str, View]
) -> list[str]:
    """What differs between `collection` as stored and `views`: the count of orders and each
    order's applied versions (what a view is made of)."""
    stored = {doc["order_id"]: doc for doc in await documents.find(collection)}
    problems = []
    if len(stored) != len(views):
        problems.append(f"{collection} holds {len(stored)} orders, {len(views)} were rebuilt")
    for order_id, view in views.items():
        got = stored.get(order_id)
        if got is None or got.get("applied") != view["applied"]:
            problems.append(f"{collection}/{order_id}: applied versions differ from the rebuild")
    return problems


async def replay_views(
    stores: dict[str, EventStore],
    documents: DocumentStore,
    *,
    swap: bool,
    dry_run: bool,
    advance: Advance = _ignore,
) -> ReplayReport:
    """Rebuild, write beside the live view, verify, diff; on `swap`, replace the live view.

    The live view is copied to `BACKUP_COLLECTION` before the swap and the swapped-in view
    is read back and checked; on a mismatch the backup is copied back. A dry run writes
    nothing at all."""
    views = await rebuild_views(stores, advance)
    live = {view["order_id"]: view for view in await documents.find(COLLECTION)}
    report = ReplayReport(
        rebuilt=len(views),
        live=len(live),
        differing=sorted(o for o in set(views) | set(live) if views.get(o) != live.get(o)),
        would_lose={
            order_id: lost
            for order_id, view in live.items()
            if (lost := losses(view, views.get(order_id)))
        },
    )
    if dry_run:
        return report
    await documents.drop(REPLAY_COLLECTION)
    for order_id, view in views.items():
        await documents.put(REPLAY_COLLECTION, order_id, view)
    report.written = True
    report.problems = await check_written(documents, REPLAY_COLLECTION, views)
    if not swap or report.problems or report.would_lose:
        return report
    await documents.copy(COLLECTION, BACKUP_COLLECTION)
    await documents.copy(REPLAY_COLLECTION, COLLECTION)
    report.problems = await check_written(documents, COLLECTION, views)
    if report.problems:
        await documents.copy(BACKUP_COLLECTION, COLLECTION)
        return report
    report.swapped = True
    return report


# --- republish ----------------------------------------------------------------------------


async def count_events(store: EventStore, advance: Advance = _ignore) -> int:
    events = 0
    async for commit in store.read_all(batch_size=READ_BATCH):
        events += len(commit.events)
        advance(len(commit.events))
    return events


async def republish_store(store: EventStore, sender: RecordSender, advance: Advance) -> int:
    return await republish(store, sender, batch_size=READ_BATCH, on_batch=advance)


# --- printing -----------------------------------------------------------------------------


def print_audit(report: dict[str, Any], console: Console) -> None:
    if not report["found"]:
        console.print(f"[red]no order {report['order_id']} in the order store[/]")
    columns = ["service", "stream", "commits", "hash chain"]
    if report["checkpoint"]:
        columns.append(f"checkpoint of {report['checkpoint']['sealed_at']}")
    chains = Table(*columns, title=f"audit of {report['order_id']}")
    for stream, chain in report["streams"].items():
        verdict = (
            "[green]intact[/]"
            if not chain["breaks"]
            else "[red]"
            + "; ".join(f"v{b['version']}: {b['detail']}" for b in chain["breaks"])
            + "[/]"
        )
        row = [chain["service"], stream, str(chain["commits"]), verdict]
        if report["checkpoint"]:
            status = chain["checkpoint"]
            row.append(
                f"[green]{status}[/]"
                if status in ("extended", "not sealed")
                else f"[red]{status}[/]"
            )
        chains.add_row(*row)
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


TIMELINE_DETAILS = (
    "cancelled_by",
    "reason",
    "amount",
    "deadline_at",
    "points",
    "decided_by",
    "order_status",
    "standing",
)


def timeline_details(data: dict[str, Any]) -> str:
    return ", ".join(f"{key}={data[key]}" for key in TIMELINE_DETAILS if key in data)


def timeline_table(timeline: list[dict[str, Any]], title: str) -> Table:
    table = Table("at", "service", "event", "details", title=title)
    for entry in timeline:
        table.add_row(
            entry["at"], entry["producer"], entry["event_type"], timeline_details(entry["data"])
        )
    return table
