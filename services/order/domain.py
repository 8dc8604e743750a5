"""The Order aggregate: placed, paid, shipped, cancelled (by whom, why).

Commands from people (`place`, `ship`, `cancel_by_buyer`) raise a DomainError when refused.
Reactions to other services' events (`confirm_payment`, `expire_payment`, `cancel_by_platform`)
never raise for a fact that arrived late: they return an `Outcome` saying what they did, so a
handler can log why nothing was recorded. Money is never the order's business to return: a
payment for a cancelled order is refunded by the payment service, which hears OrderCancelled.

Cash on delivery: the order goes straight to `to_ship`; no payment intent exists, so a payment
confirmation for a COD order is ignored (`Outcome.CASH_ON_DELIVERY`) rather than refused, because
refusing an event only parks it in a dead-letter topic and the money question belongs to the
payment service, which refuses a callback for an order it holds no intent for.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from enum import StrEnum

from shared.contracts.events import (
    BuyerCancelReason,
    CancelledBy,
    LineItem,
    OrderCancelled,
    OrderPaymentConfirmed,
    OrderPlaced,
    OrderShipped,
    OrderStatus,
    PaymentMethod,
    SellerCancellationNotApplied,
    SellerCancelReason,
    ShippingAddress,
    SystemCancelReason,
)
from shared.kernel.aggregate import Aggregate, Conflict, Invalid, NotFound
from shared.kernel.events.envelope import DomainEvent

MAX_NOTE_LENGTH = 500


def cancellation_request_route(order_id: str) -> str:
    return f"/orders/{order_id}/cancellation-requests"


class Outcome(StrEnum):
    """What a reaction to another service's event did; anything but RECORDED recorded nothing."""

    RECORDED = "recorded"
    DUPLICATE = "duplicate"
    ALREADY_PAID = "already_paid"
    ORDER_CANCELLED = "order_cancelled"
    CASH_ON_DELIVERY = "cash_on_delivery"


class Order(Aggregate):
    stream_prefix = "order"

    def __init__(self, aggregate_id: str) -> None:
        super().__init__(aggregate_id)
        self._placed: OrderPlaced | None = None
        self.payment: OrderPaymentConfirmed | None = None
        self.shipment: OrderShipped | None = None
        self.cancellation: OrderCancelled | None = None
        self.unapplied_filings: frozenset[str] = frozenset()

    # --- commands ---------------------------------------------------------------------------

    @classmethod
    def place(
        cls,
        order_id: str,
        buyer_id: str,
        seller_id: str,
        items: Sequence[LineItem],
        shipping_address: ShippingAddress,
        payment_method: PaymentMethod,
        now: datetime,
    ) -> Order:
        """`now` is the command's time: the envelope carries it, the event does not."""
        _require_aware(now)
        for name, value in (
            ("order_id", order_id),
            ("buyer_id", buyer_id),
            ("seller_id", seller_id),
        ):
            if not value.strip():
                raise Invalid(f"{name} must not be blank", field=name)
        if buyer_id == seller_id:
            raise Invalid("a shop cannot buy from itself", field="buyer_id")
        if not items:
            raise Invalid("an order needs at least one item", field="items")
        lines = [(item.sku, item.variant) for item in items]
        if len(set(lines)) != len(lines):
            raise Invalid("the same product variant is listed twice; change its quantity instead")
        order = cls(order_id)
        order.record(
            OrderPlaced(
                order_id=order_id,
                buyer_id=buyer_id,
                seller_id=seller_id,
                items=tuple(items),
                shipping_address=shipping_address,
                payment_method=payment_method,
                total_amount=sum(item.quantity * item.unit_price for item in items),
            )
        )
        return order

    def confirm_payment(self, gateway_reference: str, amount: int, paid_at: datetime) -> Outcome:
        """React to PaymentReceived."""
        placed = self.placed
        if self.payment is not None:
            same = self.payment.gateway_reference == gateway_reference
            return Outcome.DUPLICATE if same else Outcome.ALREADY_PAID
        if self.cancellation is not None:
            return Outcome.ORDER_CANCELLED
        if placed.payment_method is PaymentMethod.COD:
            return Outcome.CASH_ON_DELIVERY
        if amount != placed.total_amount:
            raise Invalid(f"amount {amount} does not match the {placed.total_amount} due")
        self.record(
            OrderPaymentConfirmed(
                order_id=self.id,
                amount=amount,
                gateway_reference=gateway_reference,
                paid_at=paid_at,
            )
        )
        return Outcome.RECORDED

    def ship(self, seller_id: str, tracking_number: str | None = None) -> None:
        placed = self.placed
        if seller_id != placed.seller_id:
            raise NotFound(f"order {self.id} not found", order_id=self.id)
        if self.cancellation is not None:
            raise Conflict("a cancelled order cannot be shipped", status=self.status)
        if self.shipment is not None:
            raise Conflict("the order is already shipped", status=self.status)
        if self.status is OrderStatus.AWAITING_PAYMENT:
            raise Conflict("the order is not paid yet; ship it once it is", status=self.status)
        self.record(
            OrderShipped(order_id=self.id, seller_id=seller_id, tracking_number=tracking_number)
        )

    def cancel_by_buyer(
        self, buyer_id: str, reason: BuyerCancelReason | str, note: str | None, now: datetime
    ) -> None:
        """Cancel an unpaid order, or a COD order not yet shipped, at once."""
        _require_aware(now)
        placed = self.placed
        if buyer_id != placed.buyer_id:
            raise NotFound(f"order {self.id} not found", order_id=self.id)
        if self.cancellation is not None:
            raise Conflict("the order is already cancelled", status=self.status)
        if self.shipment is not None:
            raise Conflict("a shipped order can no longer be cancelled", status=self.status)
        if self.payment is not None:
            route = cancellation_request_route(self.id)
            raise Conflict(
                f"a paid order cannot be cancelled directly; ask the seller to cancel it "
                f"with POST {route}",
                status=self.status,
                method="POST",
                route=route,
            )
        known_reason = _buyer_reason(reason)
        note = _clean_note(note)
        if known_reason is BuyerCancelReason.OTHER and note is None:
            raise Invalid("reason 'other' needs a note saying why", field="note")
        self.record(self._cancelled(CancelledBy.BUYER, known_reason, note=note))

    def expire_payment(self, deadline_at: datetime) -> Outcome:
        """React to PaymentDeadlineExpired: an order still unpaid is cancelled by the system."""
        placed = self.placed
        if self.cancellation is not None:
            return Outcome.ORDER_CANCELLED
        if self.payment is not None:
            return Outcome.ALREADY_PAID
        if placed.payment_method is PaymentMethod.COD:
            return Outcome.CASH_ON_DELIVERY
        self.record(
            self._cancelled(CancelledBy.SYSTEM, SystemCancelReason.PAYMENT_DEADLINE_EXPIRED)
        )
        return Outcome.RECORDED

    def cancel_by_platform(
        self, filing_id: str, reason: SellerCancelReason | BuyerCancelReason, seller_fault: bool
    ) -> Outcome:
        """React to SellerCancelApproved: an order not yet shipped is cancelled on the seller's
        side. Too late (shipped, or cancelled another way) is recorded once per filing, so the
        timeline shows why the approval changed nothing.

        OrderCancelled carries no filing id, so an order already cancelled by an approval takes
        any further approval as a redelivery of that one and records nothing."""
        if self.status in (OrderStatus.AWAITING_PAYMENT, OrderStatus.TO_SHIP):
            self.record(
                self._cancelled(
                    CancelledBy.SELLER,
                    reason,
                    was_paid=self.payment is not None,
                    seller_fault=seller_fault,
                )
            )
            return Outcome.RECORDED
        if filing_id in self.unapplied_filings or (
            self.cancellation is not None and self.cancellation.cancelled_by is CancelledBy.SELLER
        ):
            return Outcome.DUPLICATE
        self.record(
            SellerCancellationNotApplied(
                order_id=self.id,
                filing_id=filing_id,
                order_status="cancelled" if self.cancellation is not None else "shipped",
            )
        )
        return Outcome.RECORDED

    # --- state ------------------------------------------------------------------------------

    def apply(self, event: DomainEvent) -> None:
        match event:
            case OrderPlaced():
                self._placed = event
            case OrderPaymentConfirmed():
                self.payment = event
            case OrderShipped():
                self.shipment = event
            case OrderCancelled():
                self.cancellation = event
            case SellerCancellationNotApplied():
                self.unapplied_filings = self.unapplied_filings | {event.filing_id}
            case _:
                raise TypeError(f"an order cannot apply {event.event_type}")

    @property
    def placed(self) -> OrderPlaced:
        if self._placed is None:
            raise NotFound(f"order {self.id} not found", order_id=self.id)
        return self._placed

    @property
    def status(self) -> OrderStatus:
        if self.cancellation is not None:
            return OrderStatus.CANCELLED
        if self.shipment is not None:
            return OrderStatus.SHIPPED
        if self.payment is not None or self.placed.payment_method is PaymentMethod.COD:
            return OrderStatus.TO_SHIP
        return OrderStatus.AWAITING_PAYMENT

    @property
    def buyer_id(self) -> str:
        return self.placed.buyer_id

    @property
    def seller_id(self) -> str:
        return self.placed.seller_id

    @property
    def total(self) -> int:
        return self.placed.total_amount

    @property
    def payment_method(self) -> PaymentMethod:
        return self.placed.payment_method

    def _cancelled(
        self,
        by: CancelledBy,
        reason: BuyerCancelReason | SellerCancelReason | SystemCancelReason,
        *,
        note: str | None = None,
        was_paid: bool = False,
        seller_fault: bool = False,
    ) -> OrderCancelled:
        return OrderCancelled(
            order_id=self.id,
            buyer_id=self.buyer_id,
            seller_id=self.seller_id,
            cancelled_by=by,
            reason=reason,
            note=note,
            was_paid=was_paid,
            seller_fault=seller_fault,
        )


def _buyer_reason(reason: BuyerCancelReason | str) -> BuyerCancelReason:
    try:
        return BuyerCancelReason(reason)
    except ValueError:
        allowed = [member.value for member in BuyerCancelReason]
        raise Invalid(
            f"unknown cancel reason {reason!r}; pick one of {', '.join(allowed)}",
            field="reason",
            allowed=allowed,
        ) from None


def _clean_note(note: str | None) -> str | None:
    if note is None or not note.strip():
        return None
    if len(note) > MAX_NOTE_LENGTH:
        raise Invalid(f"the note is longer than {MAX_NOTE_LENGTH} characters", field="note")
    return note.strip()


def _require_aware(moment: datetime) -> None:
    if moment.tzinfo is None:
        raise Invalid("time must carry a timezone")
