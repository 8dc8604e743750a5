"""The published events of every service: what other teams build against.

One topic per producing service (`PRODUCERS`), keyed by order id (penalty events by seller id),
so the events of one order from one service stay in order on one partition. JSON Schemas and
the AsyncAPI document are generated from these classes. Money is an integer amount of rupiah;
reasons are closed enums; every decision records the policy version.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from shared.contracts.limits import (
    MAX_NOTE_LENGTH,
    MAX_ORDER_TOTAL,
    MAX_PAYMENT_AMOUNT,
    MAX_QUANTITY,
    MAX_REFERENCE_LENGTH,
    MAX_UNIT_PRICE,
)
from shared.kernel.events.envelope import DomainEvent
from shared.kernel.events.registry import EventRegistry
from shared.kernel.fields import Instant, flag, identifier, text, whole

ORDER_TOPIC = "order.events"
PAYMENT_TOPIC = "payment.events"
DISPUTE_TOPIC = "dispute.events"
PENALTY_TOPIC = "penalty.events"
TOPICS = (ORDER_TOPIC, PAYMENT_TOPIC, DISPUTE_TOPIC, PENALTY_TOPIC)
CHECKPOINT_TOPIC = "checkpoint.events"
"""Signed checkpoints every service seals of its own store (`CheckpointSealed`), kept outside
the stores; no service consumes it (the auditor's tools and the console read it)."""
PRODUCERS = {
    ORDER_TOPIC: "order",
    PAYMENT_TOPIC: "payment",
    DISPUTE_TOPIC: "seller-dispute",
    PENALTY_TOPIC: "penalty",
}
"""Which service publishes each topic (the only writer of that topic)."""

Currency = Literal["IDR"]
MAX_PENALTY_POINTS = 1_000
"""Points one penalty can carry."""


class PaymentMethod(StrEnum):
    INDOMARET = "indomaret"
    ALFAMART = "alfamart"
    CREDIT_CARD = "credit_card"
    BANK_TRANSFER = "bank_transfer"
    OVO = "ovo"
    GOPAY = "gopay"
    DANA = "dana"
    COD = "cod"


class BuyerCancelReason(StrEnum):
    CHANGED_MIND = "changed_mind"
    WRONG_ITEM_OR_VARIANT = "wrong_item_or_variant"
    PRICE = "price"
    FOUND_CHEAPER = "found_cheaper"
    ALREADY_BOUGHT_ELSEWHERE = "already_bought_elsewhere"
    CHANGE_ADDRESS = "change_address"
    OTHER = "other"


class SellerCancelReason(StrEnum):
    OUT_OF_STOCK = "out_of_stock"
    CANNOT_SHIP = "cannot_ship"


class SystemCancelReason(StrEnum):
    PAYMENT_DEADLINE_EXPIRED = "payment_deadline_expired"


class OrderStatus(StrEnum):
    """Where an order stands: the tabs of a buyer's order list, the order view's `status`."""

    AWAITING_PAYMENT = "awaiting_payment"
    TO_SHIP = "to_ship"
    SHIPPED = "shipped"
    CANCELLED = "cancelled"


class CancelledBy(StrEnum):
    BUYER = "buyer"
    SYSTEM = "system"
    SELLER = "seller"


class Standing(StrEnum):
    GOOD = "good"
    WARNING = "warning"
    RESTRICTED = "restricted"
    SUSPENDED = "suspended"


class _Value(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class LineItem(_Value):
    sku: str = text(64, examples=["TSHIRT-01"])
    variant: str = text(64, examples=["red/XL"])
    quantity: int = whole(gt=0, le=MAX_QUANTITY)
    unit_price: int = whole(
        gt=0, le=MAX_UNIT_PRICE, description="rupiah per unit", examples=[89000]
    )


class ShippingAddress(_Value):
    recipient: str = text(120)
    phone: str = Field(pattern=r"^\+?[0-9]{8,15}$", strict=True)
    street: str = text(240)
    city: str = text(80)
    province: str = text(80)
    postal_code: str = Field(pattern=r"^[0-9]{5}$", strict=True)


# --- order.events ----------------------------------------------------------------------------


class OrderEvent(DomainEvent):
    topic: ClassVar[str] = ORDER_TOPIC
    order_id: str = identifier()


class OrderPlaced(OrderEvent):
    event_type: ClassVar[str] = "OrderPlaced"
    buyer_id: str = identifier()
    seller_id: str = identifier()
    items: tuple[LineItem, ...] = Field(min_length=1)
    shipping_address: ShippingAddress
    payment_method: PaymentMethod
    total_amount: int = whole(gt=0, le=MAX_ORDER_TOTAL)
    currency: Currency = "IDR"


class OrderPaymentConfirmed(OrderEvent):
    event_type: ClassVar[str] = "OrderPaymentConfirmed"
    amount: int = whole(gt=0, le=MAX_PAYMENT_AMOUNT)
    currency: Currency = "IDR"
    gateway_reference: str = text(MAX_REFERENCE_LENGTH)
    paid_at: Instant


class OrderShipped(OrderEvent):
    event_type: ClassVar[str] = "OrderShipped"
    seller_id: str = identifier()
    tracking_number: str | None = text(64, default=None)


class OrderCancelled(OrderEvent):
    event_type: ClassVar[str] = "OrderCancelled"
    buyer_id: str = identifier()
    seller_id: str = identifier()
    cancelled_by: CancelledBy
    reason: BuyerCancelReason | SellerCancelReason | SystemCancelReason
    note: str | None = text(MAX_NOTE_LENGTH, default=None)
    was_paid: bool = flag()
    seller_fault: bool = flag(
        default=False,
        description="true when the seller caused it (counts against its performance)",
    )


class SellerCancellationNotApplied(OrderEvent):
    """An approved seller cancellation that arrived too late: the order had already moved on."""

    event_type: ClassVar[str] = "SellerCancellationNotApplied"
    filing_id: str = identifier()
    order_status: Literal["shipped", "cancelled"]


# --- payment.events --------------------------------------------------------------------------


class PaymentEvent(DomainEvent):
    topic: ClassVar[str] = PAYMENT_TOPIC
    order_id: str = identifier()


class PaymentRequested(PaymentEvent):
    event_type: ClassVar[str] = "PaymentRequested"
    buyer_id: str = identifier()
    seller_id: str = identifier()
    amount: int = whole(gt=0, le=MAX_PAYMENT_AMOUNT)
    currency: Currency = "IDR"
    method: PaymentMethod
    deadline_at: Instant
    payment_code: str | None = text(32, default=None, description="retail outlet payment code")
    virtual_account: str | None = text(
        32, default=None, description="bank transfer virtual account"
    )
    policy_version: str = text(200)


class PaymentReceived(PaymentEvent):
    """Money arrived for an open intent: the order is paid."""

    event_type: ClassVar[str] = "PaymentReceived"
    gateway_reference: str = text(MAX_REFERENCE_LENGTH)
    amount: int = whole(gt=0, le=MAX_PAYMENT_AMOUNT)
    currency: Currency = "IDR"
    paid_at: Instant


class LatePaymentReceived(PaymentEvent):
    """Money the intent cannot take (closed, expired, refunded, or already paid under another
    gateway reference): recorded, then refunded."""

    event_type: ClassVar[str] = "LatePaymentReceived"
    gateway_reference: str = text(MAX_REFERENCE_LENGTH)
    amount: int = whole(gt=0, le=MAX_PAYMENT_AMOUNT)
    currency: Currency = "IDR"
    paid_at: Instant
    intent_status: Literal["paid", "closed", "expired", "refunded"]


class PaymentAmountMismatched(PaymentEvent):
    """Money reported for the order that is not the amount due: recorded, then refunded in
    full (RefundIssued with reason `amount_mismatch`). The order stays as it was."""

    event_type: ClassVar[str] = "PaymentAmountMismatched"
    gateway_reference: str = text(MAX_REFERENCE_LENGTH)
    amount: int = whole(gt=0, le=MAX_PAYMENT_AMOUNT)
    amount_due: int = whole(gt=0, le=MAX_ORDER_TOTAL)
    currency: Currency = "IDR"
    paid_at: Instant


class PaymentDeadlineExpired(PaymentEvent):
    event_type: ClassVar[str] = "PaymentDeadlineExpired"
    deadline_at: Instant


class PaymentIntentClosed(PaymentEvent):
    """The order was cancelled before any payment: the intent takes no more money."""

    event_type: ClassVar[str] = "PaymentIntentClosed"
    reason: Literal["order_cancelled"]


class RefundIssued(PaymentEvent):
    event_type: ClassVar[str] = "RefundIssued"
    refund_id: str = identifier()
    gateway_reference: str = text(MAX_REFERENCE_LENGTH)
    amount: int = whole(gt=0, le=MAX_PAYMENT_AMOUNT)
    currency: Currency = "IDR"
    reason: Literal["order_cancelled", "late_payment", "amount_mismatch"]


# --- dispute.events --------------------------------------------------------------------------


class DisputeEvent(DomainEvent):
    topic: ClassVar[str] = DISPUTE_TOPIC
    order_id: str = identifier()


class BuyerCancellationRequested(DisputeEvent):
    event_type: ClassVar[str] = "BuyerCancellationRequested"
    request_id: str = identifier()
    buyer_id: str = identifier()
    seller_id: str = identifier()
    reason: BuyerCancelReason
    note: str | None = text(MAX_NOTE_LENGTH, default=None)
    respond_by: Instant
    on_no_response: Literal["lapse", "auto_approve"]
    policy_version: str = text(200)


class BuyerCancellationDeclined(DisputeEvent):
    event_type: ClassVar[str] = "BuyerCancellationDeclined"
    request_id: str = identifier()
    seller_id: str = identifier()
    note: str | None = text(MAX_NOTE_LENGTH, default=None)


class BuyerCancellationLapsed(DisputeEvent):
    """The seller did not answer in time and the policy lets the request lapse."""

    event_type: ClassVar[str] = "BuyerCancellationLapsed"
    request_id: str = identifier()
    policy_version: str = text(200)


class SellerCancelRequested(DisputeEvent):
    event_type: ClassVar[str] = "SellerCancelRequested"
    filing_id: str = identifier()
    seller_id: str = identifier()
    reason: SellerCancelReason
    note: str | None = text(MAX_NOTE_LENGTH, default=None)
    request_id: str | None = identifier(
        default=None, description="the buyer request it answers, if any"
    )
    review_mode: Literal["manual", "auto"]
    policy_version: str = text(200)


class SellerCancelApproved(DisputeEvent):
    """The platform approved cancelling a paid order: a seller filing, or a buyer request that
    policy approves (seller silent past the response window, or asked right after payment)."""

    event_type: ClassVar[str] = "SellerCancelApproved"
    filing_id: str = identifier()
    seller_id: str = identifier()
    buyer_id: str = identifier()
    reason: SellerCancelReason | BuyerCancelReason
    seller_fault: bool = flag()
    decided_by: str = text(
        200, description="`operator:<sub>`, `auto`, `no_response` or `early_request`"
    )
    policy_version: str = text(200)


class SellerCancelRejected(DisputeEvent):
    event_type: ClassVar[str] = "SellerCancelRejected"
    filing_id: str = identifier()
    seller_id: str = identifier()
    reason: SellerCancelReason
    decided_by: str = text(200)
    note: str | None = text(MAX_NOTE_LENGTH, default=None)
    policy_version: str = text(200)


class CancellationCaseClosed(DisputeEvent):
    """Shipping or a cancellation closed the case; open requests and filings end with it."""

    event_type: ClassVar[str] = "CancellationCaseClosed"
    closed_because: Literal["shipped", "cancelled"]


# --- penalty.events --------------------------------------------------------------------------


class PenaltyEvent(DomainEvent):
    topic: ClassVar[str] = PENALTY_TOPIC
    seller_id: str = identifier()

    def partition_key(self) -> str:
        return self.seller_id


class SellerOrderCounted(PenaltyEvent):
    """An order placed with the seller, counted in its cancellation-rate window."""

    event_type: ClassVar[str] = "SellerOrderCounted"
    order_id: str = identifier()
    placed_at: Instant


class SellerCancellationCounted(PenaltyEvent):
    """A seller-fault cancellation, counted in the rate window from `cancelled_at`."""

    event_type: ClassVar[str] = "SellerCancellationCounted"
    order_id: str = identifier()
    reason: SellerCancelReason | BuyerCancelReason
    cancelled_at: Instant


class PenaltyApplied(PenaltyEvent):
    event_type: ClassVar[str] = "PenaltyApplied"
    penalty_id: str = identifier()
    order_id: str = identifier()
    reason: SellerCancelReason
    points: int = whole(ge=0, le=MAX_PENALTY_POINTS)
    expires_at: Instant
    policy_version: str = text(200)


class PenaltyExpired(PenaltyEvent):
    event_type: ClassVar[str] = "PenaltyExpired"
    penalty_id: str = identifier()
    order_id: str = identifier()
    points: int = whole(ge=0, le=MAX_PENALTY_POINTS)


class SellerStandingChanged(PenaltyEvent):
    event_type: ClassVar[str] = "SellerStandingChanged"
    previous: Standing
    standing: Standing
    active_points: int = whole(ge=0, le=2**31)
    cancellation_rate: float = Field(ge=0, le=1, strict=True)
    policy_version: str = text(200)


# --- checkpoint.events -----------------------------------------------------------------------


class SealedHead(_Value):
    """Where a stream ended when it was sealed: its last version, that commit's hash and store
    position."""

    version: int = whole(ge=1, le=2**62)
    hash: str = Field(pattern=r"^[0-9a-f]{64}$", strict=True)
    position: int = whole(ge=1, le=2**62)


class CheckpointSignature(_Value):
    algorithm: Literal["Ed25519"]
    public_key: str = Field(
        pattern=r"^[A-Za-z0-9+/=]{44}$", strict=True, description="raw key, base64"
    )
    value: str = Field(
        pattern=r"^[A-Za-z0-9+/=]{88}$",
        strict=True,
        description="signature of the document without `signature`, in canonical JSON, base64",
    )


class SealedCheckpoint(_Value):
    """A checkpoint document (`yellowcart-checkpoint/1`), as `yellowcart checkpoint` writes it."""

    format: Literal["yellowcart-checkpoint/1"]
    sealed_at: str = text(40, examples=["2026-12-05T03:00:00.000000Z"])
    stores: dict[str, dict[str, SealedHead]] = Field(
        description="service -> stream id -> its sealed head"
    )
    signature: CheckpointSignature


class CheckpointSealed(DomainEvent):
    """A service signed the heads of every stream of its own store (one part of a seal: a
    large store is sealed in parts of at most 2,000 streams, each a complete document)."""

    topic: ClassVar[str] = CHECKPOINT_TOPIC
    event_type: ClassVar[str] = "CheckpointSealed"
    service: str = identifier(40)
    seal_id: str = identifier(64)
    part: int = whole(ge=1, le=1_000_000)
    parts: int = whole(ge=1, le=1_000_000)
    checkpoint: SealedCheckpoint

    def partition_key(self) -> str:
        return self.service

    def document(self) -> dict[str, Any]:
        """The signed document, exactly as it was signed."""
        return self.checkpoint.model_dump(mode="json")


ALL_EVENTS: tuple[type[DomainEvent], ...] = (
    OrderPlaced,
    OrderPaymentConfirmed,
    OrderShipped,
    OrderCancelled,
    SellerCancellationNotApplied,
    PaymentRequested,
    PaymentReceived,
    LatePaymentReceived,
    PaymentAmountMismatched,
    PaymentDeadlineExpired,
    PaymentIntentClosed,
    RefundIssued,
    BuyerCancellationRequested,
    BuyerCancellationDeclined,
    BuyerCancellationLapsed,
    SellerCancelRequested,
    SellerCancelApproved,
    SellerCancelRejected,
    CancellationCaseClosed,
    SellerOrderCounted,
    SellerCancellationCounted,
    PenaltyApplied,
    PenaltyExpired,
    SellerStandingChanged,
    CheckpointSealed,
)


def default_registry() -> EventRegistry:
    """A registry of every published event; built on demand, never at import."""
    return EventRegistry(ALL_EVENTS)
