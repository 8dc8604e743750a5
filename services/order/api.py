"""The order service's HTTP edge: decode, call the use case, encode (DESIGN §7)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, Query, Response
from pydantic import BaseModel, ConfigDict, Field

from services.order import handlers
from services.order.handlers import OrderContext
from shared.contracts.events import BuyerCancelReason, LineItem, PaymentMethod, ShippingAddress
from shared.kernel.auth import Role
from shared.kernel.http import PROBLEM_RESPONSES, CallerDep, require_role
from shared.kernel.runtime import context_of

Context = Annotated[OrderContext, Depends(context_of(OrderContext))]
router = APIRouter(tags=["orders"], responses=PROBLEM_RESPONSES)


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PlaceOrder(_Body):
    seller_id: str = Field(min_length=1, max_length=64, examples=["shop-1"])
    items: list[LineItem] = Field(min_length=1, max_length=50)
    shipping_address: ShippingAddress
    payment_method: PaymentMethod


class OrderAccepted(BaseModel):
    order_id: str
    status: str
    total_amount: int
    currency: Literal["IDR"] = "IDR"
    payment_deadline_at: datetime | None = Field(
        description="when an unpaid order is cancelled by the system; null for COD"
    )


class CancelOrder(_Body):
    reason: BuyerCancelReason
    note: str | None = Field(None, max_length=500, description="required when reason is other")


class ShipOrder(_Body):
    tracking_number: str | None = Field(None, max_length=64)


class OrderStatusReply(BaseModel):
    order_id: str
    status: str


StatusTab = Literal["all", "awaiting_payment", "to_ship", "shipped", "cancelled"]


@router.post("/orders", status_code=201, summary="place an order (buyer)")
async def place_order(
    body: PlaceOrder,
    caller: CallerDep,
    ctx: Context,
    response: Response,
    idempotency_key: Annotated[
        str | None,
        Header(max_length=128, description="retries with the same key return the same order"),
    ] = None,
) -> OrderAccepted:
    require_role(caller, Role.BUYER)
    placed = await handlers.place_order(
        ctx,
        caller.sub,
        body.seller_id,
        body.items,
        body.shipping_address,
        body.payment_method,
        idempotency_key,
    )
    order = placed.order
    response.headers["Location"] = f"/orders/{order.id}"
    if placed.replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return OrderAccepted(
        order_id=order.id,
        status=order.status.value,
        total_amount=order.total,
        payment_deadline_at=handlers.payment_deadline(ctx.policy, order, placed.placed_at),
    )


@router.get("/orders", summary="list own orders by status tab (buyer, seller)")
async def list_orders(
    caller: CallerDep, ctx: Context, status: Annotated[StatusTab, Query()] = "all"
) -> list[dict[str, Any]]:
    require_role(caller, Role.BUYER, Role.SELLER)
    views = await handlers.list_orders(ctx, caller, status)
    return [{k: v for k, v in view.items() if k not in ("timeline", "applied")} for view in views]


@router.get("/orders/{order_id}", summary="the order view (owner, operator)")
async def get_order(order_id: str, caller: CallerDep, ctx: Context) -> dict[str, Any]:
    order = await handlers.load_visible(ctx, caller, order_id)
    view = await handlers.order_view(ctx, order)
    return {k: v for k, v in view.items() if k != "applied"}


@router.get("/orders/{order_id}/timeline", summary="every event of the order, across services")
async def get_timeline(order_id: str, caller: CallerDep, ctx: Context) -> list[dict[str, Any]]:
    order = await handlers.load_visible(ctx, caller, order_id)
    timeline: list[dict[str, Any]] = (await handlers.order_view(ctx, order))["timeline"]
    return timeline


@router.post("/orders/{order_id}/cancel", summary="cancel an unpaid order (buyer)")
async def cancel_order(
    order_id: str, body: CancelOrder, caller: CallerDep, ctx: Context
) -> OrderStatusReply:
    require_role(caller, Role.BUYER)
    order = await handlers.cancel_by_buyer(ctx, caller, order_id, body.reason, body.note)
    return OrderStatusReply(order_id=order.id, status=order.status.value)


@router.post("/orders/{order_id}/ship", summary="mark an order shipped (seller)")
async def ship_order(
    order_id: str, caller: CallerDep, ctx: Context, body: ShipOrder | None = None
) -> OrderStatusReply:
    require_role(caller, Role.SELLER)
    order = await handlers.ship(ctx, caller, order_id, body.tracking_number if body else None)
    return OrderStatusReply(order_id=order.id, status=order.status.value)
