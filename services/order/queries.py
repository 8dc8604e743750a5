"""What the order service answers to readers: the order view, its timeline, the order lists.

Queries are apart from the use cases and typed: every body they return is a response model, so
the OpenAPI document describes it. The view is the projection's document; until the projection
has caught up with an order this service just wrote, it is folded from the order's own stream,
so a command's result is visible at once.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from services.order.domain import Order
from services.order.handlers import OrderContext, load_visible
from services.order.projection import COLLECTION, ORDER_VIEW, UNKNOWN, View
from shared.contracts.events import (
    CancelledBy,
    LineItem,
    OrderStatus,
    PaymentMethod,
    ShippingAddress,
)
from shared.kernel.auth import Caller, Role
from shared.kernel.projection import rebuild

ViewStatus = OrderStatus | Literal["unknown"]


class TimelineEntry(BaseModel):
    """One event of the order, from any service, in causal order."""

    at: datetime
    event_type: str
    producer: str
    stream_id: str
    stream_version: int
    event_id: str
    causation_id: str | None
    data: dict[str, Any] = Field(description="the event's payload, as published")


class Refund(BaseModel):
    refund_id: str
    amount: int
    reason: str
    gateway_reference: str
    at: datetime


class LatePayment(BaseModel):
    gateway_reference: str
    amount: int
    at: datetime


class PaymentSummary(BaseModel):
    status: str = Field(
        description="unknown, awaiting_payment, paid, expired, closed, refunded, cash_on_delivery"
    )
    amount: int | None = None
    method: PaymentMethod | None = None
    deadline_at: datetime | None
    paid_at: datetime | None
    payment_code: str | None = None
    virtual_account: str | None = None
    refunds: list[Refund]
    late_payments: list[LatePayment] = []
    mismatched_payments: list[LatePayment] = Field(
        [], description="payments of another amount than was due; each refunded in full"
    )


class Cancellation(BaseModel):
    cancelled_by: CancelledBy
    reason: str
    note: str | None
    at: datetime
    seller_fault: bool


class CaseRequest(BaseModel):
    request_id: str
    reason: str
    note: str | None
    respond_by: datetime
    status: str
    at: datetime


class CaseFiling(BaseModel):
    filing_id: str
    reason: str
    note: str | None
    review_mode: str
    status: str
    at: datetime
    decided_by: str | None = None
    decided_at: datetime | None = None


class CaseSummary(BaseModel):
    requests: list[CaseRequest]
    filings: list[CaseFiling]
    closed_because: str | None


class PenaltySummary(BaseModel):
    penalty_id: str
    points: int
    reason: str
    expires_at: datetime
    policy_version: str
    expired: bool


class OrderSummary(BaseModel):
    """An order as its lists show it: everything of the view but the timeline."""

    order_id: str
    buyer_id: str | None
    seller_id: str | None
    status: ViewStatus
    placed_at: datetime | None
    updated_at: datetime | None
    items: list[LineItem]
    total_amount: int | None
    currency: Literal["IDR"]
    payment_method: PaymentMethod | None
    shipping_address: ShippingAddress | None
    payment: PaymentSummary
    cancellation: Cancellation | None
    case: CaseSummary
    penalty: PenaltySummary | None
    notes: list[str]
    revision: int = Field(description="how many events changed this view")


class OrderView(OrderSummary):
    """The order view: what every service said about one order, folded."""

    timeline: list[TimelineEntry]


async def order_view(ctx: OrderContext, caller: Caller, order_id: str) -> OrderView:
    order = await load_visible(ctx, caller, order_id)
    return OrderView.model_validate(await _view_of(ctx, order))


async def timeline(ctx: OrderContext, caller: Caller, order_id: str) -> list[TimelineEntry]:
    return (await order_view(ctx, caller, order_id)).timeline


async def list_orders(
    ctx: OrderContext, caller: Caller, status: OrderStatus | Literal["all"]
) -> list[OrderSummary]:
    owner_field = "buyer_id" if caller.role is Role.BUYER else "seller_id"
    where: dict[str, str | int | float | bool | None] = {owner_field: caller.sub}
    if status != "all":
        where["status"] = status
    views = await ctx.views.find(COLLECTION, where, order_by="placed_at")
    return [OrderSummary.model_validate(view) for view in views]


async def _view_of(ctx: OrderContext, order: Order) -> View:
    view = await ctx.views.get(COLLECTION, order.id)
    if view is not None and view["status"] != UNKNOWN:
        return view
    own_events = await ctx.store.load_stream(order.stream_id)
    return rebuild(ORDER_VIEW, own_events, into={order.id: view} if view else None)[order.id]
