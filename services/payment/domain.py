"""The PaymentIntent aggregate: what an order owes, by when, what arrived and what went back.

Money is never kept for an order that does not go ahead. Every payment the
gateway reports is either the one payment of an open intent, or refunded exactly once:
- open intent, unpaid: PaymentReceived (the order is paid);
- closed, expired or refunded intent, or a paid intent paid again under another gateway
  reference (the buyer paid twice): LatePaymentReceived(intent_status), then
  RefundIssued(late_payment);
- a payment of another amount than is due, whatever the intent's state: PaymentAmountMismatched,
  then RefundIssued(amount_mismatch) for exactly the amount received; the intent stays as it
  was, so the buyer can still pay the right amount;
- the same gateway reference again: nothing (the gateway retries its callbacks).
So no reference is refunded twice: a known reference is a retry, and the kept payment is
refunded only while the intent is `paid`, which that refund ends.
An intent is open until one of its events closes it: a payment reported while the deadline
timer has not fired yet is accepted, whatever the gateway's `paid_at` says.

Cash on delivery has no intent: `PaymentIntent.open` returns None, and the handler of
OrderPlaced stores nothing. A callback for such an order finds no intent (NotFound).
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from enum import StrEnum
from typing import Literal

from shared.contracts.events import (
    LatePaymentReceived,
    PaymentAmountMismatched,
    PaymentDeadlineExpired,
    PaymentIntentClosed,
    PaymentMethod,
    PaymentReceived,
    PaymentRequested,
    RefundIssued,
)
from shared.contracts.policy import Policy
from shared.kernel.aggregate import Aggregate, Conflict, Invalid, NotFound
from shared.kernel.events.envelope import DomainEvent

PAYMENT_DEADLINE_TIMER = "payment_deadline"
RETAIL_OUTLETS = (PaymentMethod.INDOMARET, PaymentMethod.ALFAMART)
VIRTUAL_ACCOUNT_PREFIX = "8808"


class IntentStatus(StrEnum):
    AWAITING_PAYMENT = "awaiting_payment"
    PAID = "paid"
    EXPIRED = "expired"
    CLOSED = "closed"
    REFUNDED = "refunded"


_SETTLED: dict[IntentStatus, Literal["paid", "closed", "expired", "refunded"]] = {
    IntentStatus.PAID: "paid",
    IntentStatus.CLOSED: "closed",
    IntentStatus.EXPIRED: "expired",
    IntentStatus.REFUNDED: "refunded",
}


class Outcome(StrEnum):
    """What a reaction did; anything but RECORDED recorded nothing."""

    RECORDED = "recorded"
    DUPLICATE = "duplicate"
    NOT_DUE = "not_due"
    ALREADY_PAID = "already_paid"
    ALREADY_SETTLED = "already_settled"
    NO_INTENT = "no_intent"


class PaymentIntent(Aggregate):
    stream_prefix = "payment"

    def __init__(self, aggregate_id: str) -> None:
        super().__init__(aggregate_id)
        self._requested: PaymentRequested | None = None
        self.status = IntentStatus.AWAITING_PAYMENT
        self.payment: PaymentReceived | None = None
        self.late_payments: tuple[LatePaymentReceived, ...] = ()
        self.mismatched_payments: tuple[PaymentAmountMismatched, ...] = ()
        self.refunds: tuple[RefundIssued, ...] = ()

    # --- commands ---------------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        order_id: str,
        buyer_id: str,
        seller_id: str,
        amount: int,
        method: PaymentMethod,
        placed_at: datetime,
        policy: Policy,
    ) -> PaymentIntent | None:
        """React to OrderPlaced: None for cash on delivery, which is paid to the courier.

        The deadline counts from the moment the order was placed, by the same rule the order
        service used to tell the buyer (`PaymentRules.deadline_for`)."""
        deadline_at = policy.payment.deadline_for(method, placed_at)
        if deadline_at is None:
            return None
        if amount <= 0:
            raise Invalid(f"amount must be positive, not {amount}", field="amount")
        intent = cls(order_id)
        intent.record(
            PaymentRequested(
                order_id=order_id,
                buyer_id=buyer_id,
                seller_id=seller_id,
                amount=amount,
                method=method,
                deadline_at=deadline_at,
                payment_code=_digits("code", order_id, 16) if method in RETAIL_OUTLETS else None,
                virtual_account=(
                    VIRTUAL_ACCOUNT_PREFIX + _digits("va", order_id, 12)
                    if method is PaymentMethod.BANK_TRANSFER
                    else None
                ),
                policy_version=policy.version,
            )
        )
        intent.schedule(PAYMENT_DEADLINE_TIMER, deadline_at)
        return intent

    def receive_payment(self, gateway_reference: str, amount: int, paid_at: datetime) -> Outcome:
        """A gateway callback: money arrived for this order."""
        due = self.requested.amount
        known = self.received_amounts().get(gateway_reference)
        if known is not None:
            if known != amount:
                raise Conflict(
                    f"payment {gateway_reference} was already reported with amount {known}",
                    gateway_reference=gateway_reference,
                )
            return Outcome.DUPLICATE
        if amount != due:
            self.record(
                PaymentAmountMismatched(
                    order_id=self.id,
                    gateway_reference=gateway_reference,
                    amount=amount,
                    amount_due=due,
                    paid_at=paid_at,
                )
            )
            self._refund(gateway_reference, amount, "amount_mismatch")
            return Outcome.RECORDED
        if self.status is IntentStatus.AWAITING_PAYMENT:
            self.record(
                PaymentReceived(
                    order_id=self.id,
                    gateway_reference=gateway_reference,
                    amount=amount,
                    paid_at=paid_at,
                )
            )
            return Outcome.RECORDED
        self.record(
            LatePaymentReceived(
                order_id=self.id,
                gateway_reference=gateway_reference,
                amount=amount,
                paid_at=paid_at,
                intent_status=_SETTLED[self.status],
            )
        )
        self._refund(gateway_reference, amount, "late_payment")
        return Outcome.RECORDED

    def expire(self, now: datetime) -> Outcome:
        """The payment_deadline timer fired (at least once)."""
        deadline_at = self.requested.deadline_at
        if self.status is IntentStatus.PAID:
            return Outcome.ALREADY_PAID
        if self.status is not IntentStatus.AWAITING_PAYMENT:
            return Outcome.ALREADY_SETTLED
        if now < deadline_at:
            return Outcome.NOT_DUE
        self.record(PaymentDeadlineExpired(order_id=self.id, deadline_at=deadline_at))
        return Outcome.RECORDED

    def on_order_cancelled(self, now: datetime) -> Outcome:
        """React to OrderCancelled: take no more money, give back what was taken."""
        if self._requested is None:
            return Outcome.NO_INTENT
        if self.status is IntentStatus.AWAITING_PAYMENT:
            self.record(PaymentIntentClosed(order_id=self.id, reason="order_cancelled"))
            return Outcome.RECORDED
        if self.status is IntentStatus.PAID and self.payment is not None:
            self._refund(self.payment.gateway_reference, self.payment.amount, "order_cancelled")
            return Outcome.RECORDED
        return Outcome.ALREADY_SETTLED

    def _refund(
        self,
        gateway_reference: str,
        amount: int,
        reason: Literal["order_cancelled", "late_payment", "amount_mismatch"],
    ) -> None:
        self.record(
            RefundIssued(
                order_id=self.id,
                refund_id=f"rf-{self.id}-{len(self.refunds) + 1}",
                gateway_reference=gateway_reference,
                amount=amount,
                reason=reason,
            )
        )

    # --- state ------------------------------------------------------------------------------

    def apply(self, event: DomainEvent) -> None:
        match event:
            case PaymentRequested():
                self._requested = event
            case PaymentReceived():
                self.payment = event
                self.status = IntentStatus.PAID
            case LatePaymentReceived():
                self.late_payments = (*self.late_payments, event)
            case PaymentAmountMismatched():
                self.mismatched_payments = (*self.mismatched_payments, event)
            case PaymentDeadlineExpired():
                self.status = IntentStatus.EXPIRED
            case PaymentIntentClosed():
                self.status = IntentStatus.CLOSED
            case RefundIssued():
                self.refunds = (*self.refunds, event)
                if event.reason == "order_cancelled":
                    self.status = IntentStatus.REFUNDED
            case _:
                raise TypeError(f"a payment intent cannot apply {event.event_type}")

    @property
    def requested(self) -> PaymentRequested:
        if self._requested is None:
            raise NotFound(f"no payment intent for order {self.id}", order_id=self.id)
        return self._requested

    @property
    def amount(self) -> int:
        return self.requested.amount

    @property
    def deadline_at(self) -> datetime:
        return self.requested.deadline_at

    def received_amounts(self) -> dict[str, int]:
        """Every payment the gateway reported, by gateway reference: kept, late or duplicate."""
        amounts = {refund.gateway_reference: refund.amount for refund in self.refunds}
        amounts.update({late.gateway_reference: late.amount for late in self.late_payments})
        if self.payment is not None:
            amounts[self.payment.gateway_reference] = self.payment.amount
        return amounts


def _digits(purpose: str, order_id: str, count: int) -> str:
    """`count` decimal digits derived from the order id: the same on every replay."""
    digest = hashlib.sha256(f"{purpose}:{order_id}".encode()).hexdigest()
    return str(int(digest, 16) % 10**count).zfill(count)
