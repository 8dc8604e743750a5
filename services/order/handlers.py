"""Order use cases: load, decide, save — one function per use case.

Commands come from the HTTP edge (a caller with a role); reactions come from other services'
events (idempotent through the causation id); the view handler folds every service's events
into the order view.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from uuid import uuid4

from services.order.domain import Order
from services.order.projection import COLLECTION, View, apply_event, order_id_of
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
from shared.kernel.application import Repository, react
from shared.kernel.auth import Caller, Role
from shared.kernel.clock import Clock
from shared.kernel.events.envelope import DomainEvent, Envelope
from shared.kernel.eventstore.port import DuplicateCausation, EventStore
from shared.kernel.readmodel.port import DocumentStore

log = logging.getLogger(__name__)
VIEW_WRITE_ATTEMPTS = 20


@dataclass
class OrderContext:
    orders: Repository[Order]
    store: EventStore
    views: DocumentStore
    clock: Clock
    policy: Policy


@dataclass(frozen=True)
class PlacedOrder:
    order: Order
    placed_at: datetime
    replayed: bool  # an Idempotency-Key seen before: the first order is returned


async def place_order(
    ctx: OrderContext,
    buyer_id: str,
    seller_id: str,
    items: Sequence[LineItem],
    shipping_address: ShippingAddress,
    payment_method: PaymentMethod,
    idempotency_key: str | None,
) -> PlacedOrder:
    """Place an order; a retry with the same Idempotency-Key returns the first order, and the
    same key with a different order is refused (it is a client bug, not a retry)."""
    causation_id = f"place:{buyer_id}:{idempotency_key}" if idempotency_key else None
    now = ctx.clock.now()
    order = Order.place(
        f"ord-{uuid4().hex[:16]}", buyer_id, seller_id, items, shipping_address, payment_method, now
    )
    if causation_id and (earlier := await _placed_by(ctx, causation_id, order)) is not None:
        return earlier
    try:
        await ctx.orders.save(order, causation_id=causation_id, correlation_id=order.id)
    except DuplicateCausation:  # the same key raced in from a concurrent retry
        assert causation_id is not None
        earlier = await _placed_by(ctx, causation_id, order)
        assert earlier is not None
        return earlier
    return PlacedOrder(order, now, replayed=False)


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
    return PlacedOrder(order, placed.occurred_at, replayed=True)


def payment_deadline(policy: Policy, order: Order, placed_at: datetime) -> datetime | None:
    """The deadline the payment service derives from the same policy and the placing time."""
    window = policy.payment.window_for(order.payment_method)
    return None if window is None else placed_at + window


async def load_visible(ctx: OrderContext, caller: Caller, order_id: str) -> Order:
    """The order if the caller may see it; 404 otherwise (never reveal another's order)."""
    order = await ctx.orders.get(order_id)
    visible = order is not None and (
        caller.role is Role.OPERATOR
        or (caller.role is Role.BUYER and order.buyer_id == caller.sub)
        or (caller.role is Role.SELLER and order.seller_id == caller.sub)
    )
    if order is None or not visible:
        raise NotFound(f"order {order_id} not found", order_id=order_id)
    return order


async def cancel_by_buyer(
    ctx: OrderContext, caller: Caller, order_id: str, reason: BuyerCancelReason, note: str | None
) -> Order:
    order = await load_visible(ctx, caller, order_id)
    order.cancel_by_buyer(caller.sub, reason, note, ctx.clock.now())
    await ctx.orders.save(order, causation_id=None, correlation_id=order_id)
    return order


async def ship(ctx: OrderContext, caller: Caller, order_id: str, tracking: str | None) -> Order:
    order = await load_visible(ctx, caller, order_id)
    order.ship(caller.sub, tracking)
    await ctx.orders.save(order, causation_id=None, correlation_id=order_id)
    return order


# --- reactions to other services' events ---------------------------------------------------


async def react_to(ctx: OrderContext, envelope: Envelope, event: DomainEvent) -> None:
    """Payments confirm or expire an order; an approved seller cancellation cancels it."""
    match event:
        case PaymentReceived():
            await react(
                ctx.orders,
                envelope,
                event.order_id,
                lambda o: o.confirm_payment(event.gateway_reference, event.amount, event.paid_at),
            )
        case SellerCancelApproved():
            await react(
                ctx.orders,
                envelope,
                event.order_id,
                lambda o: o.cancel_by_platform(event.filing_id, event.reason, event.seller_fault),
            )
        case PaymentDeadlineExpired():
            await react(
                ctx.orders, envelope, event.order_id, lambda o: o.expire_payment(event.deadline_at)
            )


# --- the order view ------------------------------------------------------------------------


async def project(ctx: OrderContext, envelope: Envelope, event: DomainEvent) -> None:
    """Fold one event of any service into its order's view (idempotent per stream version).

    The four topics arrive concurrently, in this process and across replicas, so the view is
    written with a compare-and-set on its revision; the loser reloads and folds again.
    """
    order_id = order_id_of(envelope)
    if order_id is None:
        return
    for _ in range(VIEW_WRITE_ATTEMPTS):
        current = await ctx.views.get(COLLECTION, order_id)
        view = apply_event(current, envelope)
        if view is None:
            return
        expected = None if current is None else {"revision": current["revision"]}
        if await ctx.views.put_if(COLLECTION, order_id, view, expected):
            return
    raise ViewWriteContention(order_id)


class ViewWriteContention(Exception):
    """Too many concurrent writers of one order view; the consumer retries the event."""


async def order_view(ctx: OrderContext, order: Order) -> View:
    """The projected view, or — until the projection catches up — one folded from the
    order's own stream, so a command's result is visible at once."""
    view = await ctx.views.get(COLLECTION, order.id)
    if view is not None and view.get("status") != "unknown":
        return view
    folded: View | None = view
    for envelope in await ctx.store.load_stream(order.stream_id):
        folded = apply_event(folded, envelope) or folded
    assert folded is not None
    return folded


async def list_orders(ctx: OrderContext, caller: Caller, status: str) -> list[View]:
    owner_field = "buyer_id" if caller.role is Role.BUYER else "seller_id"
    where: dict[str, str | int | float | bool | None] = {owner_field: caller.sub}
    if status != "all":
        where["status"] = status
    return await ctx.views.find(COLLECTION, where, order_by="placed_at")
