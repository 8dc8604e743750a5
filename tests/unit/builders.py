"""Test builders for the order and payment aggregates: valid defaults, one knob per test."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from services.order.domain import Order
from services.payment.domain import PaymentIntent
from shared.contracts.events import LineItem, PaymentMethod, ShippingAddress
from shared.contracts.policy import Policy
from shared.kernel.aggregate import Aggregate

NOW = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
BUYER = "buyer-1"
SELLER = "seller-1"
ORDER_ID = "o-1"

A = TypeVar("A", bound=Aggregate)


def line_item(
    sku: str = "TSHIRT-01", variant: str = "red/XL", quantity: int = 2, unit_price: int = 89_000
) -> LineItem:
    return LineItem(sku=sku, variant=variant, quantity=quantity, unit_price=unit_price)


def address() -> ShippingAddress:
    return ShippingAddress(
        recipient="Sari",
        phone="+6281234567890",
        street="Jl. Melati 7",
        city="Bandung",
        province="Jawa Barat",
        postal_code="40115",
    )


def placed_order(
    method: PaymentMethod = PaymentMethod.BANK_TRANSFER,
    *,
    order_id: str = ORDER_ID,
    items: tuple[LineItem, ...] | None = None,
) -> Order:
    return Order.place(
        order_id=order_id,
        buyer_id=BUYER,
        seller_id=SELLER,
        items=items if items is not None else (line_item(),),
        shipping_address=address(),
        payment_method=method,
        now=NOW,
    )


def paid_order(reference: str = "gw-1") -> Order:
    order = placed_order()
    order.confirm_payment(reference, order.total, NOW + timedelta(minutes=5))
    return order


def open_intent(
    method: PaymentMethod = PaymentMethod.BANK_TRANSFER,
    *,
    order_id: str = ORDER_ID,
    amount: int = 178_000,
    policy: Policy | None = None,
) -> PaymentIntent:
    intent = PaymentIntent.open(
        order_id, BUYER, SELLER, amount, method, NOW, policy if policy is not None else Policy()
    )
    assert intent is not None, f"{method} opens no intent"
    return intent


def state_of(aggregate: Aggregate) -> dict[str, Any]:
    """What an aggregate knows, without the bookkeeping of a live command."""
    return {
        name: value
        for name, value in vars(aggregate).items()
        if name not in {"pending", "pending_timers", "version"}
    }


def replayed(aggregate: A) -> A:
    """The aggregate rebuilt from every event it recorded."""
    return type(aggregate).replay(aggregate.id, aggregate.pending)
