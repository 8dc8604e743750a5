"""Order use cases: load, decide, save — one function per command, one per reaction.

Commands come from the HTTP edge as objects (a caller with a role, the command's one instant);
reactions come from other services' events (idempotent through their cause). The order view is
a projection (`projection.py`) that the composition root subscribes; its reads are queries.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from uuid import uuid4

from services.order.domain import Order
from shared.contracts.events import (
    BuyerCancelReason,
    LineItem,
    PaymentDeadlineExpired,
    PaymentMethod,
    PaymentReceived,
    SellerCancelApproved,
    ShippingAddress,
)
from shared.contracts.policy import Policy
from shared.kernel.aggregate import Invalid, NotFound
from shared.kernel.application import Cause, Repository, react
from shared.kernel.auth import Caller
from shared.kernel.clock import Clock
from shared.kernel.events.envelope import DomainEvent, Envelope
from shared.kernel.eventstore.port import DuplicateCausation, EventStore
from shared.kernel.readmodel.port import DocumentStore

log = logging.getLogger(__name__)
REACTIONS = "order.reactions"  # the handler name in the de-duplication key of its commits


@dataclass
class OrderContext:
    orders: Repository[Order]
    store: EventStore
    views: DocumentStore
    clock: Clock
    policy: Policy


# --- commands -------------------------------------------------------------------------------


@dataclass(frozen=True)
class PlaceOrder:
    buyer_id: str
    seller_id: str
    items: Sequence[LineItem]
    shipping_address: ShippingAddress
    payment_method: PaymentMethod
    idempotency_key: str | None
    at: datetime  # the command's one instant: the OrderPlaced event carries it


@dataclass(frozen=True)
class CancelOrder:
    caller: Caller
    order_id: str
    reason: BuyerCancelReason
    note: str | None
    at: datetime


@dataclass(frozen=True)
class ShipOrder:
    caller: Caller
    order_id: str
    tracking_number: str | None
    at: datetime


@dataclass(frozen=True)
class PlacedOrder:
    order: Order
    placed_at: datetime  # the stored OrderPlaced's instant (the first one, for a retry)
    payment_deadline_at: datetime | None
    replayed: bool  # an Idempotency-Key seen before: the first order is returned


async def place_order(ctx: OrderContext, command: PlaceOrder) -> PlacedOrder:
    """Place an order; a retry with the same Idempotency-Key returns the first order, and the
    same key with a different order is refused (it is a client bug, not a retry)."""
    key = command.idempotency_key
    causation_id = f"place:{command.buyer_id}:{key}" if key else None
    order = Order.place(
        f"ord-{uuid4().hex[:16]}",
        command.buyer_id,
        command.seller_id,
        command.items,
        command.shipping_address,
        command.payment_method,
        command.at,
    )
    if causation_id and (earlier := await _placed_by(ctx, causation_id, order)) is not None:
        return earlier
    try:
        await ctx.orders.save(
            order, at=command.at, causation_id=causation_id, correlation_id=order.id
        )
    except DuplicateCausation:  # the same key raced in from a concurrent retry
        assert causation_id is not None
        earlier = await _placed_by(ctx, causation_id, order)
        assert earlier is not None
        return earlier
    return _placed(ctx, order, command.at, replayed=False)


def _placed(ctx: OrderContext, order: Order, placed_at: datetime, replayed: bool) -> PlacedOrder:
    deadline = ctx.policy.payment.deadline_for(order.payment_method, placed_at)
    return PlacedOrder(order, placed_at, deadline, replayed)


async def _placed_by(ctx: OrderContext, causation_id: str, retry: Order) -> PlacedOrder | None:
    commit = await ctx.store.commit_by_causation(causation_id)
    if commit is None:
        return None
    placed = commit.events[0]
    same_order = {k: v for k, v in placed.data.items() if k != "order_id"} == {
        k: v for k, v in retry.pending[0].model_dump(mode="json").items() if k != "order_id"
    }
    if not same_order:
        raise Invalid(
            "this Idempotency-Key was already used for a different order; use a new key",
            order_id=placed.data["order_id"],
        )
    order = await ctx.orders.get(placed.data["order_id"])
    assert order is not None
    return _placed(ctx, order, placed.occurred_at, replayed=True)


async def load_visible(ctx: OrderContext, caller: Caller, order_id: str) -> Order:
    """The order if the caller may see it; 404 otherwise (never reveal another's order)."""
    order = await ctx.orders.get(order_id)
    if order is None or not caller.may_see(buyer_id=order.buyer_id, seller_id=order.seller_id):
        raise NotFound(f"order {order_id} not found", order_id=order_id)
    return order


async def cancel_by_buyer(ctx: OrderContext, command: CancelOrder) -> Order:
    order = await load_visible(ctx, command.caller, command.order_id)
    order.cancel_by_buyer(command.caller.sub, command.reason, command.note, command.at)
    await ctx.orders.save(order, at=command.at, correlation_id=order.id)
    return order


async def ship(ctx: OrderContext, command: ShipOrder) -> Order:
    order = await load_visible(ctx, command.caller, command.order_id)
    order.ship(command.caller.sub, command.tracking_number)
    await ctx.orders.save(order, at=command.at, correlation_id=order.id)
    return order


# --- reactions to other services' events ---------------------------------------------------


async def react_to(ctx: OrderContext, envelope: Envelope, event: DomainEvent) -> None:
    """Payments confirm or expire an order; an approved seller cancellation cancels it."""
    cause = Cause.event(REACTIONS, envelope, ctx.clock.now())
    match event:
        case PaymentReceived():
            await react(
                ctx.orders,
                cause,
                event.order_id,
                lambda o: o.confirm_payment(event.gateway_reference, event.amount, event.paid_at),
            )
        case SellerCancelApproved():
            await react(
                ctx.orders,
                cause,
                event.order_id,
                lambda o: o.cancel_by_platform(event.filing_id, event.reason, event.seller_fault),
            )
        case PaymentDeadlineExpired():
            await react(
                ctx.orders, cause, event.order_id, lambda o: o.expire_payment(event.deadline_at)
            )
