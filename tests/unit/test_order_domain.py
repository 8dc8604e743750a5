"""The Order aggregate: every allowed and refused transition, and replay equals live."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TypeVar

import pytest
from builders import (
    BUYER,
    NOW,
    ORDER_ID,
    SELLER,
    address,
    line_item,
    paid_order,
    placed_order,
    replayed,
    state_of,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from services.order.domain import Order, OrderStatus, Outcome
from shared.contracts.events import (
    BuyerCancelReason,
    CancelledBy,
    OrderCancelled,
    OrderPaymentConfirmed,
    OrderPlaced,
    OrderShipped,
    PaymentMethod,
    SellerCancellationNotApplied,
    SellerCancelReason,
    SystemCancelReason,
)
from shared.kernel.aggregate import Conflict, DomainError, Invalid, NotFound

PAID_AT = NOW + timedelta(minutes=5)
ONLINE_METHODS = [method for method in PaymentMethod if method is not PaymentMethod.COD]


def shipped_order() -> Order:
    order = paid_order()
    order.ship(SELLER, "JNE-123")
    return order


def cancelled_order() -> Order:
    order = placed_order()
    order.cancel_by_buyer(BUYER, BuyerCancelReason.CHANGED_MIND, None, NOW)
    return order


E = TypeVar("E", bound=DomainError)


def refuses(order: Order, error: type[E], command: Callable[[], object]) -> E:
    """Runs a refused command: it raises `error` and records nothing."""
    before = list(order.pending)
    with pytest.raises(error) as refused:
        command()
    assert order.pending == before
    return refused.value


# --- place -----------------------------------------------------------------------------------


def test_placing_an_order_records_the_total_of_its_lines() -> None:
    order = placed_order(
        items=(line_item(quantity=2, unit_price=89_000), line_item(sku="CAP-9", unit_price=25_000))
    )

    [placed] = order.pending
    assert isinstance(placed, OrderPlaced)
    assert placed.total_amount == 2 * 89_000 + 2 * 25_000
    assert order.total == placed.total_amount
    assert (order.buyer_id, order.seller_id) == (BUYER, SELLER)
    assert order.status is OrderStatus.AWAITING_PAYMENT


def test_a_cash_on_delivery_order_is_to_ship_at_once() -> None:
    order = placed_order(PaymentMethod.COD)

    assert order.status is OrderStatus.TO_SHIP
    assert order.payment_method is PaymentMethod.COD


@pytest.mark.parametrize("blank", ["order_id", "buyer_id", "seller_id"])
def test_an_order_needs_every_id(blank: str) -> None:
    ids = {"order_id": ORDER_ID, "buyer_id": BUYER, "seller_id": SELLER, blank: "  "}

    with pytest.raises(Invalid, match=f"{blank} must not be blank"):
        Order.place(
            **ids,
            items=(line_item(),),
            shipping_address=address(),
            payment_method=PaymentMethod.OVO,
            now=NOW,
        )


def test_a_shop_cannot_buy_from_itself() -> None:
    with pytest.raises(Invalid, match="cannot buy from itself"):
        Order.place(ORDER_ID, SELLER, SELLER, (line_item(),), address(), PaymentMethod.OVO, NOW)


def test_an_order_needs_at_least_one_item() -> None:
    with pytest.raises(Invalid, match="at least one item"):
        placed_order(items=())


def test_the_same_variant_twice_is_refused() -> None:
    with pytest.raises(Invalid, match="listed twice"):
        placed_order(items=(line_item(), line_item(quantity=1)))


def test_placing_needs_an_aware_time() -> None:
    with pytest.raises(Invalid, match="timezone"):
        Order.place(
            ORDER_ID,
            BUYER,
            SELLER,
            (line_item(),),
            address(),
            PaymentMethod.OVO,
            datetime(2026, 1, 1),
        )


def test_a_never_placed_order_is_not_found() -> None:
    order = Order(ORDER_ID)

    with pytest.raises(NotFound):
        order.confirm_payment("gw-1", 1, PAID_AT)
    with pytest.raises(NotFound):
        _ = order.status


# --- confirm_payment -------------------------------------------------------------------------


def test_a_payment_confirmation_makes_an_unpaid_order_to_ship() -> None:
    order = placed_order()

    assert order.confirm_payment("gw-1", order.total, PAID_AT) is Outcome.RECORDED

    assert order.pending[-1] == OrderPaymentConfirmed(
        order_id=ORDER_ID, amount=order.total, gateway_reference="gw-1", paid_at=PAID_AT
    )
    assert order.status is OrderStatus.TO_SHIP


def test_the_same_payment_confirmed_twice_records_once() -> None:
    order = paid_order("gw-1")

    assert order.confirm_payment("gw-1", order.total, PAID_AT) is Outcome.DUPLICATE
    assert len(order.pending) == 2


def test_a_second_payment_for_a_paid_order_changes_nothing() -> None:
    order = paid_order("gw-1")

    assert order.confirm_payment("gw-2", order.total, PAID_AT) is Outcome.ALREADY_PAID
    assert len(order.pending) == 2
    assert order.payment is not None and order.payment.gateway_reference == "gw-1"


def test_a_cancelled_order_cannot_be_paid() -> None:
    order = cancelled_order()

    assert order.confirm_payment("gw-1", order.total, PAID_AT) is Outcome.ORDER_CANCELLED
    assert not any(isinstance(event, OrderPaymentConfirmed) for event in order.pending)
    assert order.status is OrderStatus.CANCELLED


def test_a_payment_confirmation_for_cash_on_delivery_is_ignored() -> None:
    order = placed_order(PaymentMethod.COD)

    assert order.confirm_payment("gw-1", order.total, PAID_AT) is Outcome.CASH_ON_DELIVERY
    assert len(order.pending) == 1


def test_a_confirmation_of_the_wrong_amount_is_refused() -> None:
    order = placed_order()

    refuses(order, Invalid, lambda: order.confirm_payment("gw-1", order.total - 1, PAID_AT))


# --- ship ------------------------------------------------------------------------------------


def test_the_seller_ships_a_paid_order() -> None:
    order = paid_order()

    order.ship(SELLER, "JNE-123")

    assert order.pending[-1] == OrderShipped(
        order_id=ORDER_ID, seller_id=SELLER, tracking_number="JNE-123"
    )
    assert order.status is OrderStatus.SHIPPED


def test_the_seller_ships_a_cash_on_delivery_order_before_payment() -> None:
    order = placed_order(PaymentMethod.COD)

    order.ship(SELLER)

    assert order.status is OrderStatus.SHIPPED


def test_another_seller_cannot_even_see_the_order() -> None:
    order = paid_order()

    error = refuses(order, NotFound, lambda: order.ship("seller-2", "JNE-123"))
    assert "seller" not in error.message


def test_an_unpaid_order_cannot_be_shipped() -> None:
    order = placed_order()

    refuses(order, Conflict, lambda: order.ship(SELLER, "JNE-123"))


def test_a_cancelled_order_cannot_be_shipped() -> None:
    order = cancelled_order()

    error = refuses(order, Conflict, lambda: order.ship(SELLER, "JNE-123"))
    assert "cancelled" in error.message


def test_an_order_is_shipped_once() -> None:
    order = shipped_order()

    refuses(order, Conflict, lambda: order.ship(SELLER, "JNE-124"))


# --- cancel_by_buyer -------------------------------------------------------------------------


@pytest.mark.parametrize("reason", list(BuyerCancelReason))
def test_the_buyer_cancels_an_unpaid_order_for_any_listed_reason(
    reason: BuyerCancelReason,
) -> None:
    order = placed_order()
    note = "ordered for the wrong city" if reason is BuyerCancelReason.OTHER else None

    order.cancel_by_buyer(BUYER, reason, note, NOW)

    assert order.pending[-1] == OrderCancelled(
        order_id=ORDER_ID,
        buyer_id=BUYER,
        seller_id=SELLER,
        cancelled_by=CancelledBy.BUYER,
        reason=reason,
        note=note,
        was_paid=False,
        seller_fault=False,
    )
    assert order.status is OrderStatus.CANCELLED


@given(
    reason=st.sampled_from(BuyerCancelReason),
    note=st.one_of(
        st.none(), st.text(st.characters(exclude_categories=("Cc", "Cs")), max_size=500)
    ),
)
def test_any_reason_with_a_note_cancels_and_other_needs_one(
    reason: BuyerCancelReason, note: str | None
) -> None:
    order = placed_order()
    has_note = note is not None and note.strip() != ""

    if reason is BuyerCancelReason.OTHER and not has_note:
        refuses(order, Invalid, lambda: order.cancel_by_buyer(BUYER, reason, note, NOW))
    else:
        order.cancel_by_buyer(BUYER, reason, note, NOW)
        assert order.cancellation is not None
        assert order.cancellation.note == (note.strip() if has_note and note else None)


def test_a_buyer_cancels_a_cash_on_delivery_order_before_it_ships() -> None:
    order = placed_order(PaymentMethod.COD)

    order.cancel_by_buyer(BUYER, BuyerCancelReason.CHANGE_ADDRESS, None, NOW)

    assert order.status is OrderStatus.CANCELLED


def test_other_without_a_note_is_refused() -> None:
    order = placed_order()

    error = refuses(
        order, Invalid, lambda: order.cancel_by_buyer(BUYER, BuyerCancelReason.OTHER, " ", NOW)
    )
    assert error.details["field"] == "note"


def test_an_overlong_note_is_refused() -> None:
    order = placed_order()

    refuses(
        order,
        Invalid,
        lambda: order.cancel_by_buyer(BUYER, BuyerCancelReason.OTHER, "x" * 501, NOW),
    )


def test_an_unknown_reason_is_not_a_reason() -> None:
    with pytest.raises(ValueError):
        BuyerCancelReason("teleported")


def test_an_unknown_reason_is_refused_with_the_known_ones() -> None:
    order = placed_order()

    error = refuses(order, Invalid, lambda: order.cancel_by_buyer(BUYER, "teleported", None, NOW))
    assert "teleported" in error.message
    assert error.details["allowed"] == [reason.value for reason in BuyerCancelReason]


def test_a_reason_given_as_its_text_is_accepted() -> None:
    order = placed_order()

    order.cancel_by_buyer(BUYER, "price", None, NOW)

    assert order.cancellation is not None
    assert order.cancellation.reason is BuyerCancelReason.PRICE


def test_paid_order_cannot_be_cancelled_by_buyer() -> None:
    order = paid_order()

    error = refuses(
        order,
        Conflict,
        lambda: order.cancel_by_buyer(BUYER, BuyerCancelReason.CHANGED_MIND, None, NOW),
    )
    route = f"/orders/{ORDER_ID}/cancellation-requests"
    assert f"POST {route}" in error.message
    assert error.details["route"] == route
    assert error.details["method"] == "POST"
    assert order.status is OrderStatus.TO_SHIP


def test_a_cancelled_order_is_already_cancelled() -> None:
    order = cancelled_order()

    error = refuses(
        order, Conflict, lambda: order.cancel_by_buyer(BUYER, BuyerCancelReason.PRICE, None, NOW)
    )
    assert "already cancelled" in error.message


def test_a_shipped_order_cannot_be_cancelled_by_buyer() -> None:
    order = placed_order(PaymentMethod.COD)
    order.ship(SELLER)

    refuses(
        order, Conflict, lambda: order.cancel_by_buyer(BUYER, BuyerCancelReason.PRICE, None, NOW)
    )


def test_another_buyer_cannot_cancel_the_order() -> None:
    order = placed_order()

    refuses(
        order,
        NotFound,
        lambda: order.cancel_by_buyer("buyer-2", BuyerCancelReason.PRICE, None, NOW),
    )


# --- expire_payment --------------------------------------------------------------------------


def test_an_unpaid_order_is_cancelled_when_its_deadline_passes() -> None:
    order = placed_order()

    assert order.expire_payment(NOW + timedelta(hours=24)) is Outcome.RECORDED

    cancelled = order.pending[-1]
    assert isinstance(cancelled, OrderCancelled)
    assert cancelled.cancelled_by is CancelledBy.SYSTEM
    assert cancelled.reason is SystemCancelReason.PAYMENT_DEADLINE_EXPIRED
    assert (cancelled.was_paid, cancelled.seller_fault) == (False, False)


def test_a_deadline_after_payment_changes_nothing() -> None:
    order = paid_order()

    assert order.expire_payment(NOW + timedelta(hours=24)) is Outcome.ALREADY_PAID
    assert len(order.pending) == 2
    assert order.status is OrderStatus.TO_SHIP


def test_a_deadline_after_cancellation_changes_nothing() -> None:
    order = cancelled_order()

    assert order.expire_payment(NOW + timedelta(hours=24)) is Outcome.ORDER_CANCELLED
    assert len(order.pending) == 2


def test_a_second_deadline_firing_changes_nothing() -> None:
    order = placed_order()
    order.expire_payment(NOW + timedelta(hours=24))

    assert order.expire_payment(NOW + timedelta(hours=24)) is Outcome.ORDER_CANCELLED
    assert len(order.pending) == 2


def test_a_deadline_for_cash_on_delivery_changes_nothing() -> None:
    order = placed_order(PaymentMethod.COD)

    assert order.expire_payment(NOW) is Outcome.CASH_ON_DELIVERY
    assert order.status is OrderStatus.TO_SHIP


# --- cancel_by_platform ----------------------------------------------------------------------


def test_an_approved_seller_cancellation_cancels_a_paid_order() -> None:
    order = paid_order()

    outcome = order.cancel_by_platform("f-1", SellerCancelReason.OUT_OF_STOCK, seller_fault=True)

    assert outcome is Outcome.RECORDED
    assert order.pending[-1] == OrderCancelled(
        order_id=ORDER_ID,
        buyer_id=BUYER,
        seller_id=SELLER,
        cancelled_by=CancelledBy.SELLER,
        reason=SellerCancelReason.OUT_OF_STOCK,
        was_paid=True,
        seller_fault=True,
    )


def test_an_approved_buyer_request_cancels_with_the_buyers_reason() -> None:
    order = paid_order()

    order.cancel_by_platform("req-1", BuyerCancelReason.FOUND_CHEAPER, seller_fault=False)

    assert order.cancellation is not None
    assert order.cancellation.reason is BuyerCancelReason.FOUND_CHEAPER
    assert order.cancellation.seller_fault is False


def test_an_approved_cancellation_of_a_cash_on_delivery_order_was_not_paid() -> None:
    order = placed_order(PaymentMethod.COD)

    order.cancel_by_platform("f-1", SellerCancelReason.CANNOT_SHIP, seller_fault=True)

    assert order.cancellation is not None
    assert order.cancellation.was_paid is False


def test_a_redelivered_approval_cancels_once() -> None:
    order = paid_order()
    order.cancel_by_platform("f-1", SellerCancelReason.OUT_OF_STOCK, seller_fault=True)

    assert order.cancel_by_platform("f-1", SellerCancelReason.OUT_OF_STOCK, True) is (
        Outcome.DUPLICATE
    )
    assert len(order.pending) == 3


@pytest.mark.parametrize(
    ("build", "status"), [(shipped_order, "shipped"), (cancelled_order, "cancelled")]
)
def test_an_approval_that_comes_too_late_is_recorded_once_as_not_applied(
    build: Callable[[], Order], status: str
) -> None:
    order = build()
    before = len(order.pending)

    first = order.cancel_by_platform("f-1", SellerCancelReason.OUT_OF_STOCK, seller_fault=True)
    again = order.cancel_by_platform("f-1", SellerCancelReason.OUT_OF_STOCK, seller_fault=True)

    assert (first, again) == (Outcome.RECORDED, Outcome.DUPLICATE)
    assert order.pending[before:] == [
        SellerCancellationNotApplied(order_id=ORDER_ID, filing_id="f-1", order_status=status)
    ]
    assert order.status == status


def test_each_late_filing_is_noted_once() -> None:
    order = shipped_order()

    order.cancel_by_platform("f-1", SellerCancelReason.OUT_OF_STOCK, seller_fault=True)
    order.cancel_by_platform("f-2", SellerCancelReason.CANNOT_SHIP, seller_fault=True)

    assert order.unapplied_filings == {"f-1", "f-2"}
    assert len(order.pending) == 5


# --- replay ----------------------------------------------------------------------------------

COMMANDS = st.one_of(
    st.tuples(st.just("pay"), st.sampled_from(["gw-1", "gw-2"])),
    st.tuples(st.just("ship"), st.sampled_from([SELLER, "seller-2"])),
    st.tuples(st.just("cancel"), st.sampled_from(BuyerCancelReason)),
    st.tuples(st.just("expire"), st.none()),
    st.tuples(st.just("approve"), st.sampled_from(["f-1", "f-2"])),
)


def run(order: Order, command: str, argument: object) -> None:
    if command == "pay":
        order.confirm_payment(str(argument), order.total, PAID_AT)
    elif command == "ship":
        order.ship(str(argument), "JNE-1")
    elif command == "cancel":
        order.cancel_by_buyer(BUYER, BuyerCancelReason(str(argument)), "a note", NOW)
    elif command == "expire":
        order.expire_payment(NOW + timedelta(hours=24))
    else:
        order.cancel_by_platform(str(argument), SellerCancelReason.OUT_OF_STOCK, True)


@settings(max_examples=200)
@given(method=st.sampled_from(PaymentMethod), commands=st.lists(COMMANDS, max_size=12))
def test_replaying_the_recorded_events_rebuilds_the_same_order(
    method: PaymentMethod, commands: list[tuple[str, object]]
) -> None:
    order = placed_order(method)
    for command, argument in commands:
        recorded = len(order.pending)
        try:
            run(order, command, argument)
        except DomainError:
            assert len(order.pending) == recorded

    rebuilt = replayed(order)

    assert state_of(rebuilt) == state_of(order)
    assert rebuilt.status == order.status
    assert rebuilt.version == len(order.pending)
    assert sum(isinstance(event, OrderCancelled) for event in order.pending) <= 1
