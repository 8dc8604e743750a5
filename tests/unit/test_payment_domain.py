"""The PaymentIntent aggregate, and the money invariant across the order and payment services."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from datetime import timedelta

import pytest
from builders import (
    BUYER,
    NOW,
    ORDER_ID,
    SELLER,
    open_intent,
    placed_order,
    replayed,
    state_of,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from services.order.domain import Order, OrderStatus
from services.payment.domain import PAYMENT_DEADLINE_TIMER, IntentStatus, Outcome, PaymentIntent
from shared.contracts.events import (
    BuyerCancelReason,
    LatePaymentReceived,
    OrderCancelled,
    PaymentAmountMismatched,
    PaymentDeadlineExpired,
    PaymentIntentClosed,
    PaymentMethod,
    PaymentReceived,
    PaymentRequested,
    RefundIssued,
    SellerCancelReason,
)
from shared.contracts.policy import PaymentRules, Policy
from shared.kernel.aggregate import Conflict, DomainError, Invalid, NotFound
from shared.kernel.events.envelope import DomainEvent

AMOUNT = 178_000
DEADLINE = NOW + timedelta(hours=24)
PAID_AT = NOW + timedelta(minutes=5)
ONLINE_METHODS = [method for method in PaymentMethod if method is not PaymentMethod.COD]


def paid_intent(reference: str = "gw-1") -> PaymentIntent:
    intent = open_intent()
    intent.receive_payment(reference, AMOUNT, PAID_AT)
    return intent


def refunds_of(intent: PaymentIntent) -> list[RefundIssued]:
    return [event for event in intent.pending if isinstance(event, RefundIssued)]


# --- open ------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ONLINE_METHODS)
def test_an_intent_is_due_by_the_policy_window_of_its_method(method: PaymentMethod) -> None:
    policy = Policy()
    intent = open_intent(method, policy=policy)

    [requested] = intent.pending
    assert isinstance(requested, PaymentRequested)
    window = policy.payment.window_for(method)
    assert window is not None
    assert requested.deadline_at == NOW + window
    assert (requested.amount, requested.method) == (AMOUNT, method)
    assert requested.policy_version == policy.version
    assert [(t.name, t.due_at) for t in intent.pending_timers] == [
        (PAYMENT_DEADLINE_TIMER, NOW + window)
    ]
    assert intent.status is IntentStatus.AWAITING_PAYMENT


def test_a_market_policy_sets_the_window() -> None:
    policy = Policy(payment=PaymentRules(windows={PaymentMethod.OVO: timedelta(seconds=30)}))

    intent = open_intent(PaymentMethod.OVO, policy=policy)

    assert intent.deadline_at == NOW + timedelta(seconds=30)
    assert intent.requested.policy_version == policy.version != Policy().version


@pytest.mark.parametrize("method", [PaymentMethod.INDOMARET, PaymentMethod.ALFAMART])
def test_a_retail_outlet_payment_gets_a_payment_code(method: PaymentMethod) -> None:
    requested = open_intent(method).requested

    assert requested.payment_code is not None and requested.payment_code.isdigit()
    assert len(requested.payment_code) == 16
    assert requested.virtual_account is None


def test_a_bank_transfer_gets_a_virtual_account() -> None:
    requested = open_intent(PaymentMethod.BANK_TRANSFER).requested

    assert requested.virtual_account is not None and requested.virtual_account.isdigit()
    assert requested.virtual_account.startswith("8808")
    assert requested.payment_code is None


@pytest.mark.parametrize("method", [PaymentMethod.CREDIT_CARD, PaymentMethod.GOPAY])
def test_cards_and_wallets_need_no_code(method: PaymentMethod) -> None:
    requested = open_intent(method).requested

    assert (requested.payment_code, requested.virtual_account) == (None, None)


@given(order_id=st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9._:@-]{0,39}\Z"))
def test_payment_codes_are_derived_from_the_order_alone(order_id: str) -> None:
    first = open_intent(PaymentMethod.INDOMARET, order_id=order_id)
    second = open_intent(PaymentMethod.INDOMARET, order_id=order_id)

    assert first.pending == second.pending


def test_different_orders_get_different_codes() -> None:
    codes = {
        open_intent(PaymentMethod.BANK_TRANSFER, order_id=f"o-{n}").requested.virtual_account
        for n in range(50)
    }

    assert len(codes) == 50


def test_cash_on_delivery_opens_no_intent() -> None:
    intent = PaymentIntent.open(ORDER_ID, BUYER, SELLER, AMOUNT, PaymentMethod.COD, NOW, Policy())

    assert intent is None


@pytest.mark.parametrize("amount", [0, -1])
def test_an_intent_needs_a_positive_amount(amount: int) -> None:
    with pytest.raises(Invalid, match="positive"):
        open_intent(amount=amount)


# --- receive_payment -------------------------------------------------------------------------


def test_a_payment_for_an_open_intent_is_received() -> None:
    intent = open_intent()

    assert intent.receive_payment("gw-1", AMOUNT, PAID_AT) is Outcome.RECORDED

    assert intent.pending[-1] == PaymentReceived(
        order_id=ORDER_ID, gateway_reference="gw-1", amount=AMOUNT, paid_at=PAID_AT
    )
    assert intent.status is IntentStatus.PAID


@pytest.mark.parametrize("paid_first", [False, True])
def test_a_payment_of_the_wrong_amount_is_recorded_and_refunded_in_full(paid_first: bool) -> None:
    intent = paid_intent("gw-1") if paid_first else open_intent()
    status_before, pending_before = intent.status, len(intent.pending)

    assert intent.receive_payment("gw-2", 1000, PAID_AT) is Outcome.RECORDED

    mismatch, refund = intent.pending[pending_before:]
    assert isinstance(mismatch, PaymentAmountMismatched)
    assert (mismatch.amount, mismatch.amount_due, mismatch.gateway_reference) == (
        1000,
        AMOUNT,
        "gw-2",
    )
    assert isinstance(refund, RefundIssued)
    assert (refund.amount, refund.reason, refund.gateway_reference) == (
        1000,
        "amount_mismatch",
        "gw-2",
    )
    assert intent.status is status_before, "the intent stays as it was"
    assert intent.receive_payment("gw-2", 1000, PAID_AT) is Outcome.DUPLICATE


def test_a_retried_callback_records_nothing() -> None:
    intent = paid_intent("gw-1")

    assert intent.receive_payment("gw-1", AMOUNT, PAID_AT) is Outcome.DUPLICATE
    assert len(intent.pending) == 2


def test_a_known_reference_with_another_amount_is_a_conflict() -> None:
    intent = paid_intent("gw-1")

    with pytest.raises(Conflict):
        intent.receive_payment("gw-1", AMOUNT + 1, PAID_AT)
    assert len(intent.pending) == 2


def test_a_second_payment_for_a_paid_intent_is_recorded_and_refunded() -> None:
    intent = paid_intent("gw-1")

    assert intent.receive_payment("gw-2", AMOUNT, PAID_AT) is Outcome.RECORDED

    assert intent.pending[2:] == [
        LatePaymentReceived(
            order_id=ORDER_ID,
            gateway_reference="gw-2",
            amount=AMOUNT,
            paid_at=PAID_AT,
            intent_status="paid",
        ),
        RefundIssued(
            order_id=ORDER_ID,
            refund_id=f"rf-{ORDER_ID}-1",
            gateway_reference="gw-2",
            amount=AMOUNT,
            reason="late_payment",
        ),
    ]
    assert intent.status is IntentStatus.PAID
    assert intent.payment is not None and intent.payment.gateway_reference == "gw-1"


def test_a_second_payment_retried_is_refunded_once() -> None:
    intent = paid_intent("gw-1")
    intent.receive_payment("gw-2", AMOUNT, PAID_AT)

    assert intent.receive_payment("gw-2", AMOUNT, PAID_AT) is Outcome.DUPLICATE
    assert len(refunds_of(intent)) == 1


def closed_intent() -> PaymentIntent:
    intent = open_intent()
    intent.on_order_cancelled(NOW)
    return intent


def expired_intent() -> PaymentIntent:
    intent = open_intent()
    intent.expire(DEADLINE)
    return intent


def refunded_intent() -> PaymentIntent:
    intent = paid_intent("gw-1")
    intent.on_order_cancelled(NOW)
    return intent


@pytest.mark.parametrize(
    ("build", "status"),
    [(closed_intent, "closed"), (expired_intent, "expired"), (refunded_intent, "refunded")],
)
def test_a_late_payment_is_recorded_and_refunded(
    build: Callable[[], PaymentIntent], status: str
) -> None:
    intent = build()
    before = len(intent.pending)
    refund_number = len(intent.refunds) + 1

    assert intent.receive_payment("gw-9", AMOUNT, PAID_AT) is Outcome.RECORDED

    assert intent.pending[before:] == [
        LatePaymentReceived(
            order_id=ORDER_ID,
            gateway_reference="gw-9",
            amount=AMOUNT,
            paid_at=PAID_AT,
            intent_status=status,
        ),
        RefundIssued(
            order_id=ORDER_ID,
            refund_id=f"rf-{ORDER_ID}-{refund_number}",
            gateway_reference="gw-9",
            amount=AMOUNT,
            reason="late_payment",
        ),
    ]
    assert intent.status == status
    assert intent.receive_payment("gw-9", AMOUNT, PAID_AT) is Outcome.DUPLICATE
    assert len(intent.pending) == before + 2


def test_a_payment_without_an_intent_is_not_found() -> None:
    with pytest.raises(NotFound):
        PaymentIntent(ORDER_ID).receive_payment("gw-1", AMOUNT, PAID_AT)


# --- expire ----------------------------------------------------------------------------------


def test_an_unpaid_intent_expires_at_its_deadline() -> None:
    intent = open_intent()

    assert intent.expire(DEADLINE) is Outcome.RECORDED

    assert intent.pending[-1] == PaymentDeadlineExpired(order_id=ORDER_ID, deadline_at=DEADLINE)
    assert intent.status is IntentStatus.EXPIRED


def test_a_timer_firing_early_changes_nothing() -> None:
    intent = open_intent()

    assert intent.expire(DEADLINE - timedelta(seconds=1)) is Outcome.NOT_DUE
    assert intent.status is IntentStatus.AWAITING_PAYMENT


def test_a_deadline_after_payment_changes_nothing() -> None:
    intent = paid_intent()

    assert intent.expire(DEADLINE) is Outcome.ALREADY_PAID
    assert len(intent.pending) == 2
    assert intent.status is IntentStatus.PAID


def test_a_second_firing_of_the_deadline_changes_nothing() -> None:
    intent = expired_intent()

    assert intent.expire(DEADLINE + timedelta(minutes=1)) is Outcome.ALREADY_SETTLED
    assert len(intent.pending) == 2


def test_a_deadline_after_cancellation_changes_nothing() -> None:
    intent = closed_intent()

    assert intent.expire(DEADLINE) is Outcome.ALREADY_SETTLED
    assert intent.status is IntentStatus.CLOSED


# --- on_order_cancelled ----------------------------------------------------------------------


def test_cancelling_an_unpaid_order_closes_its_intent() -> None:
    intent = open_intent()

    assert intent.on_order_cancelled(NOW) is Outcome.RECORDED

    assert intent.pending[-1] == PaymentIntentClosed(order_id=ORDER_ID, reason="order_cancelled")
    assert intent.status is IntentStatus.CLOSED


def test_cancelling_a_paid_order_refunds_its_payment() -> None:
    intent = paid_intent("gw-1")

    assert intent.on_order_cancelled(NOW) is Outcome.RECORDED

    assert refunds_of(intent) == [
        RefundIssued(
            order_id=ORDER_ID,
            refund_id=f"rf-{ORDER_ID}-1",
            gateway_reference="gw-1",
            amount=AMOUNT,
            reason="order_cancelled",
        )
    ]
    assert intent.status is IntentStatus.REFUNDED


@pytest.mark.parametrize("build", [closed_intent, expired_intent, refunded_intent])
def test_a_settled_intent_ignores_a_cancellation(build: Callable[[], PaymentIntent]) -> None:
    intent = build()
    before = list(intent.pending)

    assert intent.on_order_cancelled(NOW) is Outcome.ALREADY_SETTLED
    assert intent.pending == before


def test_a_cash_on_delivery_cancellation_has_no_intent_to_close() -> None:
    assert PaymentIntent(ORDER_ID).on_order_cancelled(NOW) is Outcome.NO_INTENT


def test_refund_ids_count_up_per_order() -> None:
    intent = paid_intent("gw-1")
    intent.receive_payment("gw-2", AMOUNT, PAID_AT)
    intent.on_order_cancelled(NOW)
    intent.receive_payment("gw-3", AMOUNT, PAID_AT)

    assert [(r.refund_id, r.gateway_reference, r.reason) for r in intent.refunds] == [
        (f"rf-{ORDER_ID}-1", "gw-2", "late_payment"),
        (f"rf-{ORDER_ID}-2", "gw-1", "order_cancelled"),
        (f"rf-{ORDER_ID}-3", "gw-3", "late_payment"),
    ]
    assert intent.received_amounts() == {"gw-1": AMOUNT, "gw-2": AMOUNT, "gw-3": AMOUNT}


# --- replay ----------------------------------------------------------------------------------

INTENT_COMMANDS = st.one_of(
    st.tuples(st.just("pay"), st.sampled_from(["gw-1", "gw-2", "gw-3"])),
    st.tuples(st.just("pay_wrong_amount"), st.just("gw-4")),
    st.tuples(st.just("expire"), st.sampled_from([-1, 0, 60])),
    st.tuples(st.just("order_cancelled"), st.none()),
)


def run_on_intent(intent: PaymentIntent, command: str, argument: object) -> None:
    if command == "pay":
        intent.receive_payment(str(argument), AMOUNT, PAID_AT)
    elif command == "pay_wrong_amount":
        intent.receive_payment(str(argument), AMOUNT - 1, PAID_AT)
    elif command == "expire":
        assert isinstance(argument, int)
        intent.expire(DEADLINE + timedelta(seconds=argument))
    else:
        intent.on_order_cancelled(NOW)


@settings(max_examples=200)
@given(method=st.sampled_from(ONLINE_METHODS), commands=st.lists(INTENT_COMMANDS, max_size=12))
def test_replaying_the_recorded_events_rebuilds_the_same_intent(
    method: PaymentMethod, commands: list[tuple[str, object]]
) -> None:
    intent = open_intent(method)
    for command, argument in commands:
        recorded = len(intent.pending)
        try:
            run_on_intent(intent, command, argument)
        except DomainError:
            assert len(intent.pending) == recorded

    rebuilt = replayed(intent)

    assert state_of(rebuilt) == state_of(intent)
    assert rebuilt.status == intent.status
    assert rebuilt.version == len(intent.pending)


# --- the money invariant, across both aggregates ---------------------------------------------


class Shop:
    """An order and its payment intent, each rebuilt from its stream before every command, with
    each service's events delivered to the other in per-topic order, possibly twice."""

    def __init__(self, method: PaymentMethod) -> None:
        order = placed_order(method)
        intent = open_intent(method, amount=order.total)
        self.order_events: list[DomainEvent] = list(order.pending)
        self.payment_events: list[DomainEvent] = list(intent.pending)
        self.to_order = 0
        self.to_payment = 0
        self.paid_references: set[str] = set()

    @property
    def order(self) -> Order:
        return Order.replay(ORDER_ID, self.order_events)

    @property
    def intent(self) -> PaymentIntent:
        return PaymentIntent.replay(ORDER_ID, self.payment_events)

    def on_order(self, command: str) -> None:
        order = self.order
        try:
            if command == "buyer_cancel":
                order.cancel_by_buyer(BUYER, BuyerCancelReason.CHANGED_MIND, None, NOW)
            elif command == "approve":
                order.cancel_by_platform("f-1", SellerCancelReason.OUT_OF_STOCK, True)
            elif command == "ship":
                order.ship(SELLER, "JNE-1")
        except Conflict:
            assert order.pending == []
        self.order_events += order.pending

    def on_payment(self, command: str, reference: str = "") -> None:
        intent = self.intent
        if command == "pay":
            intent.receive_payment(reference, intent.amount, PAID_AT)
            self.paid_references.add(reference)
        elif command == "deadline":
            intent.expire(intent.deadline_at)
        self.payment_events += intent.pending

    def deliver_to_order(self, event: DomainEvent) -> None:
        order = self.order
        if isinstance(event, PaymentReceived):
            order.confirm_payment(event.gateway_reference, event.amount, event.paid_at)
        elif isinstance(event, PaymentDeadlineExpired):
            order.expire_payment(event.deadline_at)
        self.order_events += order.pending

    def deliver_to_payment(self, event: DomainEvent) -> None:
        intent = self.intent
        if isinstance(event, OrderCancelled):
            intent.on_order_cancelled(NOW)
        self.payment_events += intent.pending

    def step(self, move: tuple[str, int]) -> None:
        action, number = move
        if action in ("buyer_cancel", "approve", "ship"):
            self.on_order(action)
        elif action == "pay":
            self.on_payment("pay", f"gw-{number}")
        elif action == "deadline":
            self.on_payment("deadline")
        elif action == "to_order" and self.to_order < len(self.payment_events):
            self.to_order += 1
            self.deliver_to_order(self.payment_events[self.to_order - 1])
        elif action == "to_payment" and self.to_payment < len(self.order_events):
            self.to_payment += 1
            self.deliver_to_payment(self.order_events[self.to_payment - 1])
        elif action == "redeliver_to_order" and self.to_order:
            self.deliver_to_order(self.payment_events[number % self.to_order])
        elif action == "redeliver_to_payment" and self.to_payment:
            self.deliver_to_payment(self.order_events[number % self.to_payment])

    def drain(self) -> None:
        while self.to_order < len(self.payment_events) or self.to_payment < len(self.order_events):
            self.step(("to_order", 0))
            self.step(("to_payment", 0))


MOVES = st.tuples(
    st.sampled_from(
        [
            "pay",
            "buyer_cancel",
            "deadline",
            "approve",
            "ship",
            "to_order",
            "to_payment",
            "redeliver_to_order",
            "redeliver_to_payment",
        ]
    ),
    st.integers(min_value=0, max_value=3),
)


@settings(max_examples=500)
@given(method=st.sampled_from(ONLINE_METHODS), moves=st.lists(MOVES, max_size=30))
def test_money_is_kept_only_for_a_paid_order_and_otherwise_refunded_once(
    method: PaymentMethod, moves: list[tuple[str, int]]
) -> None:
    shop = Shop(method)
    for move in moves:
        shop.step(move)
    shop.drain()
    order, intent = shop.order, shop.intent

    refunded = Counter(refund.gateway_reference for refund in intent.refunds)
    assert all(count == 1 for count in refunded.values()), "a reference refunded twice"
    assert set(intent.received_amounts()) == shop.paid_references
    kept = shop.paid_references - set(refunded)
    if order.status is OrderStatus.CANCELLED:
        assert kept == set(), "cancelled with money kept"
        assert intent.status in (IntentStatus.CLOSED, IntentStatus.EXPIRED, IntentStatus.REFUNDED)
    elif order.payment is not None:
        assert intent.status is IntentStatus.PAID
        assert kept == {order.payment.gateway_reference}
    else:
        assert order.status is OrderStatus.AWAITING_PAYMENT
        assert intent.status is IntentStatus.AWAITING_PAYMENT
        assert shop.paid_references == set()
    assert all(refund.amount == order.total for refund in intent.refunds)
    assert len({refund.refund_id for refund in intent.refunds}) == len(intent.refunds)


@pytest.mark.parametrize("payment_first", [True, False])
def test_a_payment_racing_a_buyer_cancel_ends_refunded(payment_first: bool) -> None:
    shop = Shop(PaymentMethod.BANK_TRANSFER)
    moves = [("pay", 1), ("buyer_cancel", 0)]
    for move in moves if payment_first else reversed(moves):
        shop.step(move)
    shop.drain()

    assert shop.order.status is OrderStatus.CANCELLED
    assert [r.gateway_reference for r in shop.intent.refunds] == ["gw-1"]


@pytest.mark.parametrize("payment_first", [True, False])
def test_a_payment_racing_the_deadline_ends_paid_or_refunded(payment_first: bool) -> None:
    shop = Shop(PaymentMethod.OVO)
    moves = [("pay", 1), ("deadline", 0)]
    for move in moves if payment_first else reversed(moves):
        shop.step(move)
    shop.drain()

    if payment_first:
        assert (shop.order.status, shop.intent.refunds) == (OrderStatus.TO_SHIP, ())
    else:
        assert shop.order.status is OrderStatus.CANCELLED
        assert [r.reason for r in shop.intent.refunds] == ["late_payment"]
