"""Penalty use cases: count orders and seller-fault cancellations, expire points, report."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from services.penalty.domain import (
    PENALTY_EXPIRY_TIMER,
    STANDING_REVIEW_TIMER,
    SellerPerformance,
    SellerRecord,
)
from shared.contracts.events import (
    BuyerCancelReason,
    CancelledBy,
    OrderCancelled,
    OrderPlaced,
    SellerCancelReason,
)
from shared.contracts.policy import Policy
from shared.kernel.aggregate import NotFound
from shared.kernel.application import Cause, Repository, handle_event
from shared.kernel.auth import Caller
from shared.kernel.clock import Clock
from shared.kernel.events.envelope import DomainEvent, Envelope
from shared.kernel.eventstore.port import DueTimer

RECORDS = "penalty.records"  # handler names in the de-duplication key of their commits
TIMERS = "penalty.timers"


@dataclass
class PenaltyContext:
    sellers: Repository[SellerRecord]
    clock: Clock
    policy: Policy


async def on_order_event(ctx: PenaltyContext, envelope: Envelope, event: DomainEvent) -> None:
    """Orders count from when they were placed; cancellations from when they happened (the
    events' own times), so a replay or a late delivery counts them in the same window."""
    at = envelope.occurred_at
    step: Callable[..., None]
    match event:
        case OrderPlaced():
            seller_id, order_id = event.seller_id, event.order_id
            step = partial(SellerRecord.on_order_placed, order_id=order_id, placed_at=at)
        case OrderCancelled(
            cancelled_by=CancelledBy.SELLER,
            seller_fault=True,
            reason=SellerCancelReason() | BuyerCancelReason() as reason,
        ):
            seller_id, order_id = event.seller_id, event.order_id
            step = partial(
                SellerRecord.on_seller_fault_cancellation, order_id=order_id, reason=reason
            )
        case _:
            return

    def decide(record: SellerRecord | None) -> SellerRecord:
        record = record or SellerRecord(seller_id)
        step(record, now=at, policy=ctx.policy)
        return record

    cause = Cause.event(RECORDS, envelope, ctx.clock.now())
    await handle_event(ctx.sellers, seller_id, decide, cause)


async def on_timer(ctx: PenaltyContext, timer: DueTimer) -> None:
    seller_id = str(timer.data["aggregate_id"])
    cause = Cause.timer(TIMERS, timer, seller_id, ctx.clock.now())
    now = cause.at

    def fire(record: SellerRecord | None) -> SellerRecord | None:
        if record is None:
            return None
        if timer.name == PENALTY_EXPIRY_TIMER:
            record.expire_penalty(str(timer.data["penalty_id"]), now, ctx.policy)
        elif timer.name == STANDING_REVIEW_TIMER:
            record.reevaluate(now, ctx.policy)
        return record

    await handle_event(ctx.sellers, seller_id, fire, cause)


async def performance(ctx: PenaltyContext, caller: Caller, seller_id: str) -> SellerPerformance:
    if not caller.may_see(buyer_id=None, seller_id=seller_id):
        raise NotFound(f"seller {seller_id} not found", seller_id=seller_id)
    record = await ctx.sellers.get(seller_id) or SellerRecord(seller_id)
    return record.performance(ctx.clock.now(), ctx.policy)
