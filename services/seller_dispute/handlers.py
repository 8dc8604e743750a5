"""Seller-dispute use cases: buyer requests, seller filings, platform decisions.

The service learns an order only from order events: it folds them into `OrderFacts` (a read
model in its own database) and loads each case with those facts.
"""

from __future__ import annotations

from dataclasses import dataclass

from services.seller_dispute.domain import (
    SELLER_RESPONSE_TIMER,
    CancellationCase,
    OrderFacts,
    order_id_of,
)
from shared.contracts.events import (
    BuyerCancelReason,
    OrderCancelled,
    OrderEvent,
    OrderShipped,
    SellerCancelReason,
)
from shared.contracts.policy import Policy
from shared.kernel.aggregate import NotFound
from shared.kernel.application import Repository, handle_event, react
from shared.kernel.auth import Caller, Role
from shared.kernel.clock import Clock
from shared.kernel.events.envelope import DomainEvent, Envelope
from shared.kernel.events.registry import EventRegistry
from shared.kernel.eventstore.port import DueTimer, EventStore
from shared.kernel.readmodel.port import DocumentStore

FACTS = "order_facts"


class CaseRepository(Repository[CancellationCase]):
    """Cases rebuilt from their stream and the order facts this service has seen."""

    def __init__(
        self, store: EventStore, registry: EventRegistry, clock: Clock, documents: DocumentStore
    ) -> None:
        super().__init__(store, CancellationCase, registry, "seller-dispute", clock)
        self.documents = documents

    async def facts(self, order_id: str) -> OrderFacts | None:
        stored = await self.documents.get(FACTS, order_id)
        return None if stored is None else OrderFacts.model_validate(stored)

    async def get(self, aggregate_id: str) -> CancellationCase | None:
        facts = await self.facts(aggregate_id)
        events = await self.events_of(aggregate_id)
        if facts is None and events is None:
            return None
        return CancellationCase.load(facts or OrderFacts(order_id=aggregate_id), events or [])


@dataclass
class DisputeContext:
    cases: CaseRepository
    clock: Clock
    policy: Policy


async def _case(ctx: DisputeContext, order_id: str) -> CancellationCase:
    case = await ctx.cases.get(order_id)
    if case is None:
        raise NotFound(f"order {order_id} not found", order_id=order_id)
    return case


async def visible_case(ctx: DisputeContext, caller: Caller, order_id: str) -> CancellationCase:
    case = await ctx.cases.get(order_id)
    if case is not None and (
        caller.role is Role.OPERATOR
        or (caller.role is Role.BUYER and case.facts.buyer_id == caller.sub)
        or (caller.role is Role.SELLER and case.facts.seller_id == caller.sub)
    ):
        return case
    raise NotFound(f"order {order_id} not found", order_id=order_id)


async def _save(ctx: DisputeContext, case: CancellationCase) -> CancellationCase:
    await ctx.cases.save(case, causation_id=None, correlation_id=case.id)
    return case


async def request_cancellation(
    ctx: DisputeContext, caller: Caller, order_id: str, reason: BuyerCancelReason, note: str | None
) -> CancellationCase:
    case = await _case(ctx, order_id)
    case.request_by_buyer(caller.sub, reason, note, ctx.clock.now(), ctx.policy)
    return await _save(ctx, case)


async def decline_request(
    ctx: DisputeContext, caller: Caller, request_id: str, note: str | None
) -> CancellationCase:
    case = await _case(ctx, order_id_of(request_id))
    case.decline_request(caller.sub, request_id, note)
    return await _save(ctx, case)


async def file_cancellation(
    ctx: DisputeContext,
    caller: Caller,
    order_id: str,
    reason: SellerCancelReason,
    note: str | None,
    request_id: str | None,
) -> CancellationCase:
    case = await _case(ctx, order_id)
    case.file_by_seller(caller.sub, reason, note, ctx.policy, request_id)
    return await _save(ctx, case)


async def decide(
    ctx: DisputeContext, caller: Caller, filing_id: str, approve: bool, note: str | None
) -> CancellationCase:
    case = await _case(ctx, order_id_of(filing_id))
    if approve:
        case.approve(filing_id, caller.sub, ctx.policy)
    else:
        case.reject(filing_id, caller.sub, note, ctx.policy)
    return await _save(ctx, case)


async def on_order_event(ctx: DisputeContext, envelope: Envelope, event: DomainEvent) -> None:
    """Fold the fact first (idempotent), then let an open case react to shipping/cancelling."""
    if not isinstance(event, OrderEvent):
        return
    facts = await ctx.cases.facts(event.order_id) or OrderFacts(order_id=event.order_id)
    evolved = facts.evolve(event)
    if evolved != facts:
        await ctx.cases.documents.put(FACTS, event.order_id, evolved.model_dump(mode="json"))
    if isinstance(event, OrderShipped):
        await react(ctx.cases, envelope, event.order_id, lambda case: case.on_order_shipped())
    elif isinstance(event, OrderCancelled):
        await react(ctx.cases, envelope, event.order_id, lambda case: case.on_order_cancelled())


async def on_timer(ctx: DisputeContext, timer: DueTimer) -> None:
    if timer.name != SELLER_RESPONSE_TIMER:
        return
    now = ctx.clock.now()
    request_id = str(timer.data["request_id"])

    def window_passed(case: CancellationCase | None) -> CancellationCase | None:
        if case is not None:
            case.response_window_passed(request_id, now)
        return case

    order_id = order_id_of(request_id)
    await handle_event(
        ctx.cases, order_id, window_passed, causation_id=timer.timer_id, correlation_id=order_id
    )
