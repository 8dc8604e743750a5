"""Seller-dispute use cases: buyer requests, seller filings, platform decisions.

The service learns an order only from order events: it folds them into `OrderFacts` (a read
model in its own database) and loads each case with those facts.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

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
from shared.kernel.application import Cause, Repository, handle_event, react
from shared.kernel.auth import Caller
from shared.kernel.clock import Clock
from shared.kernel.events.envelope import DomainEvent, Envelope
from shared.kernel.events.registry import EventRegistry
from shared.kernel.eventstore.port import DueTimer, EventStore
from shared.kernel.readmodel.port import DocumentStore

FACTS = "order_facts"
REACTIONS = "seller-dispute.facts"  # handler names in the de-duplication key of their commits
TIMERS = "seller-dispute.timers"


class CaseRepository(Repository[CancellationCase]):
    """Cases rebuilt from their stream and the order facts this service has seen."""

    def __init__(
        self, store: EventStore, registry: EventRegistry, documents: DocumentStore
    ) -> None:
        super().__init__(store, CancellationCase, registry, "seller-dispute")
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


@dataclass(frozen=True)
class RequestCancellation:
    """A buyer asks the seller to cancel a paid order."""

    caller: Caller
    order_id: str
    reason: BuyerCancelReason
    note: str | None
    at: datetime


@dataclass(frozen=True)
class DeclineRequest:
    caller: Caller
    request_id: str
    note: str | None
    at: datetime


@dataclass(frozen=True)
class FileCancellation:
    """A seller files a cancellation with the platform."""

    caller: Caller
    order_id: str
    reason: SellerCancelReason
    note: str | None
    request_id: str | None
    at: datetime


@dataclass(frozen=True)
class DecideFiling:
    """The platform (an operator) approves or rejects a seller's filing."""

    caller: Caller
    filing_id: str
    approve: bool
    note: str | None
    at: datetime


async def _case(ctx: DisputeContext, order_id: str) -> CancellationCase:
    case = await ctx.cases.get(order_id)
    if case is None:
        raise NotFound(f"order {order_id} not found", order_id=order_id)
    return case


async def visible_case(ctx: DisputeContext, caller: Caller, order_id: str) -> CancellationCase:
    case = await ctx.cases.get(order_id)
    if case is not None and caller.may_see(
        buyer_id=case.facts.buyer_id, seller_id=case.facts.seller_id
    ):
        return case
    raise NotFound(f"order {order_id} not found", order_id=order_id)


async def _save(case: CancellationCase, ctx: DisputeContext, at: datetime) -> CancellationCase:
    await ctx.cases.save(case, at=at, correlation_id=case.id)
    return case


async def request_cancellation(
    ctx: DisputeContext, command: RequestCancellation
) -> CancellationCase:
    case = await _case(ctx, command.order_id)
    case.request_by_buyer(command.caller.sub, command.reason, command.note, command.at, ctx.policy)
    return await _save(case, ctx, command.at)


async def decline_request(ctx: DisputeContext, command: DeclineRequest) -> CancellationCase:
    case = await _case(ctx, order_id_of(command.request_id))
    case.decline_request(command.caller.sub, command.request_id, command.note)
    return await _save(case, ctx, command.at)


async def file_cancellation(ctx: DisputeContext, command: FileCancellation) -> CancellationCase:
    case = await _case(ctx, command.order_id)
    case.file_by_seller(
        command.caller.sub, command.reason, command.note, ctx.policy, command.request_id
    )
    return await _save(case, ctx, command.at)


async def decide(ctx: DisputeContext, command: DecideFiling) -> CancellationCase:
    case = await _case(ctx, order_id_of(command.filing_id))
    if command.approve:
        case.approve(command.filing_id, command.caller.sub, ctx.policy)
    else:
        case.reject(command.filing_id, command.caller.sub, command.note, ctx.policy)
    return await _save(case, ctx, command.at)


async def on_order_event(ctx: DisputeContext, envelope: Envelope, event: DomainEvent) -> None:
    """Fold the fact first (idempotent), then let an open case react to shipping/cancelling."""
    if not isinstance(event, OrderEvent):
        return
    facts = await ctx.cases.facts(event.order_id) or OrderFacts(order_id=event.order_id)
    evolved = facts.evolve(event)
    if evolved != facts:
        await ctx.cases.documents.put(FACTS, event.order_id, evolved.model_dump(mode="json"))
    cause = Cause.event(REACTIONS, envelope, ctx.clock.now())
    if isinstance(event, OrderShipped):
        await react(ctx.cases, cause, event.order_id, lambda case: case.on_order_shipped())
    elif isinstance(event, OrderCancelled):
        await react(ctx.cases, cause, event.order_id, lambda case: case.on_order_cancelled())


async def on_timer(ctx: DisputeContext, timer: DueTimer) -> None:
    if timer.name != SELLER_RESPONSE_TIMER:
        return
    request_id = str(timer.data["request_id"])
    order_id = order_id_of(request_id)
    cause = Cause.timer(TIMERS, timer, order_id, ctx.clock.now())

    def window_passed(case: CancellationCase | None) -> CancellationCase | None:
        if case is not None:
            case.response_window_passed(request_id, cause.at)
        return case

    await handle_event(ctx.cases, order_id, window_passed, cause)
