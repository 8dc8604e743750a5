"""Races end in a refund, never in kept money, in both orders of arrival.

Every race runs with each event delivered once and twice (redelivery). Whatever the order, the
order ends either paid (to ship, the intent paid, nothing refunded) or cancelled with every
payment the gateway reported refunded exactly once. After each scenario the whole log is
delivered again and nothing may change (idempotent consumers).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from services.order.domain import OrderStatus
from services.order.handlers import CancelOrder, ShipOrder, cancel_by_buyer, ship
from services.order.projection import COLLECTION
from services.payment.domain import IntentStatus, Outcome
from services.seller_dispute.handlers import (
    DecideFiling,
    FileCancellation,
    decide,
    file_cancellation,
)
from shared.contracts.events import (
    ORDER_TOPIC,
    PAYMENT_TOPIC,
    BuyerCancelReason,
    CancelledBy,
    PaymentDeadlineExpired,
    SellerCancelReason,
    SystemCancelReason,
)
from shared.kernel.aggregate import Conflict
from shared.kernel.clock import FakeClock
from shared.kernel.events.envelope import Envelope
from tests.integration.harness import BUYER, OPERATOR, SELLER, T0, Bus, Message, running_bus

DEADLINE = T0 + timedelta(hours=24)  # bank transfer, default policy
redelivery = pytest.mark.parametrize("twice", [False, True], ids=["once", "twice"])


@pytest.fixture
async def bus(tmp_path: Path) -> AsyncIterator[Bus]:
    async with running_bus(tmp_path) as bus:
        yield bus


async def money_outcome(bus: Bus, order_id: str, payments: int = 1) -> str:
    """The order's money outcome, `paid` or `refunded`; fails on any other end state.

    `payments` is how many payments the gateway reported for the order."""
    await bus.pump()
    order = await bus.order.orders.get(order_id)
    intent = await bus.payment.intents.get(order_id)
    assert order is not None and intent is not None
    received = intent.received_amounts()
    assert len(received) == payments
    refunded = Counter(refund.gateway_reference for refund in intent.refunds)
    stored_refunds = await bus.events("RefundIssued", order_id=order_id)
    assert len(stored_refunds) == len(intent.refunds)
    if order.status is OrderStatus.CANCELLED:
        assert refunded == Counter(received.keys()), "every payment refunded exactly once"
        assert sum(r.amount for r in intent.refunds) == sum(received.values())
        assert intent.status is not IntentStatus.PAID
        return "refunded"
    assert order.status in (OrderStatus.TO_SHIP, OrderStatus.SHIPPED)
    assert intent.status is IntentStatus.PAID
    assert intent.payment is not None and list(received) == [intent.payment.gateway_reference]
    assert not intent.refunds
    return "paid"


async def assert_redelivery_changes_nothing(bus: Bus) -> None:
    """Deliver the whole log again: no store gets a commit, no order view changes."""
    before = (await bus.commit_positions(), await bus.order.views.find(COLLECTION))
    await bus.redeliver_log()
    assert (await bus.commit_positions(), await bus.order.views.find(COLLECTION)) == before


async def buyer_cancels(bus: Bus, order_id: str) -> None:
    await cancel_by_buyer(
        bus.order,
        CancelOrder(BUYER, order_id, BuyerCancelReason.CHANGED_MIND, None, at=bus.clock.now()),
    )


# --- payment vs buyer cancel ---------------------------------------------------------------


@redelivery
@pytest.mark.parametrize("payment_saw_cancel", [True, False], ids=["closed", "still_open"])
async def test_payment_after_buyer_cancel_is_refunded_once(
    bus: Bus, payment_saw_cancel: bool, twice: bool
) -> None:
    order_id = await bus.place_order()
    await buyer_cancels(bus, order_id)
    if payment_saw_cancel:
        await bus.pump(twice=twice)
    assert await bus.pay(order_id) is Outcome.RECORDED
    assert await bus.pay(order_id) is Outcome.DUPLICATE  # the gateway retries its callback
    await bus.pump(twice=twice)

    assert await money_outcome(bus, order_id) == "refunded"
    (refund,) = await bus.events("RefundIssued")
    assert refund.data["reason"] == ("late_payment" if payment_saw_cancel else "order_cancelled")
    counts = await bus.counts()
    assert counts["OrderCancelled"] == 1
    assert counts["LatePaymentReceived"] == (1 if payment_saw_cancel else 0)
    await assert_redelivery_changes_nothing(bus)


@redelivery
@pytest.mark.parametrize("payment_saw_cancel", [True, False], ids=["closed", "still_open"])
async def test_buyer_paying_twice_for_a_cancelled_order_gets_both_back(
    bus: Bus, payment_saw_cancel: bool, twice: bool
) -> None:
    order_id = await bus.place_order()
    await buyer_cancels(bus, order_id)
    if payment_saw_cancel:
        await bus.pump(twice=twice)
    assert await bus.pay(order_id, "gw-1") is Outcome.RECORDED
    assert await bus.pay(order_id, "gw-2") is Outcome.RECORDED
    await bus.pump(twice=twice)

    assert await money_outcome(bus, order_id, payments=2) == "refunded"
    await assert_redelivery_changes_nothing(bus)


@redelivery
@pytest.mark.parametrize("order_saw_payment", [True, False], ids=["before_cancel", "after"])
async def test_payment_received_first_ends_paid_or_refunded_once(
    bus: Bus, order_saw_payment: bool, twice: bool
) -> None:
    order_id = await bus.place_order()
    assert await bus.pay(order_id) is Outcome.RECORDED
    if order_saw_payment:
        await bus.pump(twice=twice)
        with pytest.raises(Conflict):
            await buyer_cancels(bus, order_id)
    else:  # PaymentReceived is still on its way: the order lets the buyer cancel
        await buyer_cancels(bus, order_id)
    await bus.pump(twice=twice)

    expected = "paid" if order_saw_payment else "refunded"
    assert await money_outcome(bus, order_id) == expected
    counts = await bus.counts()
    assert counts["OrderCancelled"] == (0 if order_saw_payment else 1)
    assert counts["RefundIssued"] == (0 if order_saw_payment else 1)
    await assert_redelivery_changes_nothing(bus)


@redelivery
async def test_cancel_and_payment_in_flight_cross_in_either_order(bus: Bus, twice: bool) -> None:
    """Both facts are stored before either service hears the other's: deliver the payment
    to the order first, or the cancellation to the payment first."""
    for payment_first in (True, False):
        order_id = await bus.place_order()
        await buyer_cancels(bus, order_id)
        assert await bus.pay(order_id) is Outcome.RECORDED
        messages = await bus.collect()
        to_order = [m for m in messages if m.topic == PAYMENT_TOPIC]
        to_payment = [m for m in messages if m.topic == ORDER_TOPIC]
        if payment_first:
            await bus.deliver_all(to_order, twice=twice)
            await bus.deliver_all(to_payment, twice=twice)
        else:
            await bus.deliver_all(to_payment, twice=twice)
            await bus.deliver_all(to_order, twice=twice)
        await bus.pump(twice=twice)
        assert await money_outcome(bus, order_id) == "refunded"
    assert (await bus.counts())["RefundIssued"] == 2  # one per order
    await assert_redelivery_changes_nothing(bus)


async def test_two_replicas_handling_the_same_events_at_once_take_effect_once(
    tmp_path: Path,
) -> None:
    """Redelivery at the same moment: a rebalance hands the same events to two replicas."""
    clock = FakeClock(T0)
    async with running_bus(tmp_path, clock) as one, running_bus(tmp_path, clock) as two:
        for _ in range(5):
            order_id = await one.place_order()
            await one.pay(order_id)
            await buyer_cancels(one, order_id)
            messages = await one.collect()
            await asyncio.gather(*(bus.deliver(m) for m in messages for bus in (one, two)))
            assert await money_outcome(one, order_id) == "refunded"
        counts = await one.counts()
    assert counts["OrderCancelled"] == counts["RefundIssued"] == 5


# --- payment vs deadline -------------------------------------------------------------------


@redelivery
@pytest.mark.parametrize("order_heard_expiry", [True, False], ids=["expired", "expiry_in_flight"])
async def test_payment_after_the_deadline_fired_is_refunded_once(
    bus: Bus, order_heard_expiry: bool, twice: bool
) -> None:
    order_id = await bus.place_order()
    bus.clock.set(DEADLINE - timedelta(seconds=1))
    assert await bus.run_timers("payment") == 0  # not due yet
    bus.clock.set(DEADLINE + timedelta(minutes=1))
    assert await bus.run_timers("payment") == 1
    if order_heard_expiry:
        await bus.pump(twice=twice)
        order = await bus.order.orders.get(order_id)
        assert order is not None and order.cancellation is not None
        assert order.cancellation.cancelled_by is CancelledBy.SYSTEM
        assert order.cancellation.reason is SystemCancelReason.PAYMENT_DEADLINE_EXPIRED
    assert await bus.pay(order_id) is Outcome.RECORDED
    await bus.pump(twice=twice)

    assert await money_outcome(bus, order_id) == "refunded"
    counts = await bus.counts()
    assert counts["PaymentDeadlineExpired"] == 1
    assert counts["LatePaymentReceived"] == 1
    assert counts["RefundIssued"] == 1
    assert counts["OrderCancelled"] == 1
    assert counts["PaymentReceived"] == 0
    await assert_redelivery_changes_nothing(bus)


@redelivery
@pytest.mark.parametrize(
    "paid_at",
    [DEADLINE - timedelta(hours=1), DEADLINE + timedelta(hours=1)],
    ids=["before_deadline", "after_deadline_before_the_timer"],
)
async def test_payment_before_the_deadline_fired_keeps_the_order(
    bus: Bus, paid_at: datetime, twice: bool
) -> None:
    """Paid before the deadline, or after it by the clock but before the timer fired: the
    intent was still open, so the order is paid and the later firing changes nothing."""
    order_id = await bus.place_order()
    bus.clock.set(paid_at)
    assert await bus.pay(order_id) is Outcome.RECORDED
    await bus.pump(twice=twice)
    bus.clock.set(DEADLINE + timedelta(hours=2))
    assert await bus.run_timers("payment") == 1  # completed, with no effect
    await bus.pump(twice=twice)

    assert await money_outcome(bus, order_id) == "paid"
    counts = await bus.counts()
    assert counts["PaymentDeadlineExpired"] == 0
    assert counts["OrderCancelled"] == 0
    await assert_redelivery_changes_nothing(bus)


async def test_a_deadline_expiry_reaching_a_paid_order_changes_nothing(bus: Bus) -> None:
    order_id = await bus.place_order()
    await bus.pay(order_id)
    await bus.pump()
    stray = Envelope.of(
        PaymentDeadlineExpired(order_id=order_id, deadline_at=DEADLINE),
        stream_id=f"payment-{order_id}",
        stream_version=99,
        occurred_at=DEADLINE,
        producer="payment",
        correlation_id=order_id,
        causation_id=None,
    )
    before = await bus.commit_positions()
    await bus.deliver(Message(PAYMENT_TOPIC, stray), to=["order"])
    order = await bus.order.orders.get(order_id)
    assert order is not None and order.status is OrderStatus.TO_SHIP
    assert (await bus.commit_positions())["order"] == before["order"]


# --- seller cancel vs shipping -------------------------------------------------------------


async def paid_order(bus: Bus) -> str:
    order_id = await bus.place_order()
    await bus.pay(order_id)
    await bus.pump()
    return order_id


async def approve_seller_cancellation(bus: Bus, order_id: str) -> None:
    case = await file_cancellation(
        bus.dispute,
        FileCancellation(
            SELLER, order_id, SellerCancelReason.OUT_OF_STOCK, None, None, at=bus.clock.now()
        ),
    )
    await decide(
        bus.dispute,
        DecideFiling(
            OPERATOR, case.filings[-1].filing_id, approve=True, note=None, at=bus.clock.now()
        ),
    )


@redelivery
async def test_approval_arriving_after_shipping_is_not_applied(bus: Bus, twice: bool) -> None:
    order_id = await paid_order(bus)
    await approve_seller_cancellation(bus, order_id)  # SellerCancelApproved is on its way
    await ship(bus.order, ShipOrder(SELLER, order_id, "JNE-1", at=bus.clock.now()))
    await bus.pump(twice=twice)

    order = await bus.order.orders.get(order_id)
    assert order is not None and order.status is OrderStatus.SHIPPED
    assert await money_outcome(bus, order_id) == "paid"
    counts = await bus.counts()
    assert counts["SellerCancellationNotApplied"] == 1
    assert counts["OrderCancelled"] == 0
    assert counts["RefundIssued"] == 0
    assert counts["PenaltyApplied"] == 0
    await assert_redelivery_changes_nothing(bus)


@redelivery
async def test_ship_attempt_after_approval_is_refused_and_refunded_once(
    bus: Bus, twice: bool
) -> None:
    order_id = await paid_order(bus)
    await approve_seller_cancellation(bus, order_id)
    await bus.pump(twice=twice)
    with pytest.raises(Conflict):  # 409 at the HTTP edge
        await ship(bus.order, ShipOrder(SELLER, order_id, "JNE-1", at=bus.clock.now()))
    await bus.pump(twice=twice)

    order = await bus.order.orders.get(order_id)
    assert order is not None and order.cancellation is not None
    assert order.cancellation.cancelled_by is CancelledBy.SELLER
    assert await money_outcome(bus, order_id) == "refunded"
    counts = await bus.counts()
    assert counts["OrderCancelled"] == 1
    assert counts["RefundIssued"] == 1
    assert counts["PenaltyApplied"] == 1
    assert counts["OrderShipped"] == 0
    assert counts["SellerCancellationNotApplied"] == 0
    await assert_redelivery_changes_nothing(bus)
