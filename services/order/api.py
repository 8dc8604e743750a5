"""The order service's HTTP edge: decode, build the command, call the use case, encode."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Header, Query, Response
from pydantic import BaseModel, Field, field_validator
from pydantic_core import PydanticCustomError

from services.order import handlers, queries
from services.order.handlers import CancelOrder, OrderContext, PlaceOrder, ShipOrder
from services.order.queries import OrderSummary, OrderView, TimelineEntry
from shared.contracts.events import (
    BuyerCancelReason,
    LineItem,
    OrderStatus,
    PaymentMethod,
    ShippingAddress,
)
from shared.contracts.limits import (
    MAX_LINE_ITEMS,
    MAX_NOTE_LENGTH,
    MAX_ORDER_TOTAL,
    MAX_REFERENCE_LENGTH,
)
from shared.kernel.auth import Role
from shared.kernel.fields import TOKEN_CHARACTERS, identifier, text
from shared.kernel.http import PROBLEM_RESPONSES, CallerDep, PathId, RequestBody, require_role
from shared.kernel.runtime import context_of

Context = Annotated[OrderContext, Depends(context_of(OrderContext))]
router = APIRouter(tags=["orders"], responses=PROBLEM_RESPONSES)


class NewOrder(RequestBody):
    seller_id: str = identifier(examples=["shop-1"])
    items: list[LineItem] = Field(min_length=1, max_length=MAX_LINE_ITEMS)
    shipping_address: ShippingAddress
    payment_method: PaymentMethod

    @field_validator("items")
    @classmethod
    def _total_within_limit(cls, items: list[LineItem]) -> list[LineItem]:
        total = sum(item.quantity * item.unit_price for item in items)
        if total > MAX_ORDER_TOTAL:
            raise PydanticCustomError(
                "order_total_limit",
                "the order total {total} exceeds the {limit} rupiah limit of one order",
                {"total": total, "limit": MAX_ORDER_TOTAL},
            )
        return items


class OrderAccepted(BaseModel):
    order_id: str
    status: OrderStatus
    total_amount: int
    currency: Literal["IDR"] = "IDR"
    payment_deadline_at: datetime | None = Field(
        description="when an unpaid order is cancelled by the system; null for COD"
    )


class CancelRequest(RequestBody):
    reason: BuyerCancelReason
    note: str | None = text(
        MAX_NOTE_LENGTH, default=None, description="required when reason is other"
    )


class ShipRequest(RequestBody):
    tracking_number: str | None = text(64, default=None)


class OrderStatusReply(BaseModel):
    order_id: str
    status: OrderStatus


@router.post("/orders", status_code=201, summary="place an order (buyer)")
async def place_order(
    body: NewOrder,
    caller: CallerDep,
    ctx: Context,
    response: Response,
    idempotency_key: Annotated[
        str | None,
        Header(
            min_length=1,
            max_length=MAX_REFERENCE_LENGTH,
            pattern=TOKEN_CHARACTERS,
            description="retries with the same key return the same order (visible ASCII)",
        ),
    ] = None,
) -> OrderAccepted:
    require_role(caller, Role.BUYER)
    placed = await handlers.place_order(
        ctx,
        PlaceOrder(
            buyer_id=caller.sub,
            seller_id=body.seller_id,
            items=body.items,
            shipping_address=body.shipping_address,
            payment_method=body.payment_method,
            idempotency_key=idempotency_key,
            at=ctx.clock.now(),
        ),
    )
    order = placed.order
    response.headers["Location"] = f"/orders/{order.id}"
    if placed.replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return OrderAccepted(
        order_id=order.id,
        status=order.status,
        total_amount=order.total,
        payment_deadline_at=placed.payment_deadline_at,
    )


@router.get("/orders", summary="list own orders by status tab (buyer, seller)")
async def list_orders(
    caller: CallerDep,
    ctx: Context,
    status: Annotated[OrderStatus | Literal["all"], Query()] = "all",
) -> list[OrderSummary]:
    require_role(caller, Role.BUYER, Role.SELLER)
    return await queries.list_orders(ctx, caller, status)


@router.get("/orders/{order_id}", summary="the order view (owner, operator)")
async def get_order(order_id: PathId, caller: CallerDep, ctx: Context) -> OrderView:
    return await queries.order_view(ctx, caller, order_id)


@router.get("/orders/{order_id}/timeline", summary="every event of the order, across services")
async def get_timeline(order_id: PathId, caller: CallerDep, ctx: Context) -> list[TimelineEntry]:
    return await queries.timeline(ctx, caller, order_id)


@router.post("/orders/{order_id}/cancel", summary="cancel an unpaid order (buyer)")
async def cancel_order(
    order_id: PathId, body: CancelRequest, caller: CallerDep, ctx: Context
) -> OrderStatusReply:
    require_role(caller, Role.BUYER)
    command = CancelOrder(caller, order_id, body.reason, body.note, at=ctx.clock.now())
    order = await handlers.cancel_by_buyer(ctx, command)
    return OrderStatusReply(order_id=order.id, status=order.status)


@router.post("/orders/{order_id}/ship", summary="mark an order shipped (seller)")
async def ship_order(
    order_id: PathId, caller: CallerDep, ctx: Context, body: ShipRequest | None = None
) -> OrderStatusReply:
    require_role(caller, Role.SELLER)
    tracking = body.tracking_number if body else None
    order = await handlers.ship(ctx, ShipOrder(caller, order_id, tracking, at=ctx.clock.now()))
    return OrderStatusReply(order_id=order.id, status=order.status)
