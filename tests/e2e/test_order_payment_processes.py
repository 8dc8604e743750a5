"""Order and payment as separate processes on the local broker and SQLite (issue: place, pay,
cancel, expire, refund), asserted through HTTP and by reading the topics with a plain consumer."""

from __future__ import annotations

import json
from typing import Any
from uuid import uuid4

import pytest

from operations.demo.scenarios import Api
from operations.localbroker import LocalBroker
from shared.kernel.settings import Settings
from tests.e2e.conftest import events_by_order

pytestmark = [pytest.mark.e2e, pytest.mark.broker, pytest.mark.slow]

SHORT = {
    "YELLOWCART_POLICY__PAYMENT__WINDOWS": json.dumps({"ovo": "PT3S", "bank_transfer": "PT1H"}),
}


async def test_order_and_payment_processes_play_the_unpaid_order_story(
    e2e_broker: LocalBroker, processes_factory: Any
) -> None:
    processes = processes_factory(SHORT)
    api = Api(processes.start("order", "payment"), Settings(), uuid4().hex[:6])

    # place → the buyer cancels → cancelled at once
    cancelled = api.place("bank_transfer")["order_id"]
    reply = api.cancel(cancelled, "changed_mind")
    assert reply["status"] == "cancelled"

    # place → the window passes unpaid → cancelled by the system
    expired = api.place("ovo")["order_id"]
    view = api.wait_for(expired, lambda v: v["status"] == "cancelled", "system cancel", 30)
    assert view["cancellation"]["cancelled_by"] == "system"
    assert view["cancellation"]["reason"] == "payment_deadline_expired"

    # place → pay → to ship
    placed = api.place("bank_transfer")
    paid = placed["order_id"]
    assert api.pay(paid, placed["total_amount"], "gw-paid-1")["outcome"] == "accepted"
    api.wait_for(paid, lambda v: v["status"] == "to_ship", "paid", 30)

    # pay after expiry → recorded and refunded
    placed = api.place("ovo")
    late = placed["order_id"]
    api.wait_for(late, lambda v: v["payment"]["status"] == "expired", "expired", 30)
    assert api.pay(late, placed["total_amount"], "gw-late-1")["outcome"] == "refunded"
    api.wait_for(late, lambda v: len(v["payment"]["refunds"]) == 1, "refunded", 30)

    order_events = await events_by_order(e2e_broker, "order.events", 2 + 2 + 2 + 2)
    assert [e["event_type"] for e in order_events[cancelled]] == ["OrderPlaced", "OrderCancelled"]
    assert order_events[cancelled][1]["data"]["cancelled_by"] == "buyer"
    assert order_events[expired][1]["data"]["cancelled_by"] == "system"
    assert [e["event_type"] for e in order_events[paid]] == [
        "OrderPlaced",
        "OrderPaymentConfirmed",
    ]
    payment_events = await events_by_order(e2e_broker, "payment.events", 2 + 2 + 2 + 4)
    assert [e["event_type"] for e in payment_events[cancelled]] == [
        "PaymentRequested",
        "PaymentIntentClosed",
    ]
    assert [e["event_type"] for e in payment_events[expired]] == [
        "PaymentRequested",
        "PaymentDeadlineExpired",
    ]
    assert [e["event_type"] for e in payment_events[paid]] == [
        "PaymentRequested",
        "PaymentReceived",
    ]
    assert [e["event_type"] for e in payment_events[late]] == [
        "PaymentRequested",
        "PaymentDeadlineExpired",
        "LatePaymentReceived",
        "RefundIssued",
    ]
    refund = payment_events[late][-1]["data"]
    assert (refund["reason"], refund["amount"]) == ("late_payment", placed["total_amount"])
