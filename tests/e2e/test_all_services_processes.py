"""All four services as separate processes on the local broker and SQLite: a paid order is
cancelled only through the seller and the platform, refunded, and the seller penalised."""

from __future__ import annotations

import json
import time
from typing import Any
from uuid import uuid4

import httpx
import pytest
from aiokafka import AIOKafkaProducer
from prometheus_client.parser import text_string_to_metric_families

from operations.demo.scenarios import Api
from operations.localbroker import LocalBroker
from shared.kernel.auth import Role
from shared.kernel.settings import Settings
from tests.conftest import read_records
from tests.e2e.conftest import events_by_order

pytestmark = [pytest.mark.e2e, pytest.mark.broker, pytest.mark.slow]
SERVICES = ("order", "payment", "seller-dispute", "penalty")


def wait_until(check: Any, what: str, timeout_s: float = 30) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"never happened: {what}")
        time.sleep(0.2)


def paid_order(api: Api) -> dict[str, Any]:
    placed = api.place("bank_transfer")
    api.pay(placed["order_id"], placed["total_amount"], f"gw-{uuid4().hex[:8]}")
    api.wait_for(placed["order_id"], lambda v: v["status"] == "to_ship", "paid")
    return placed


def case_of(api: Api, order_id: str) -> dict[str, Any]:
    case: dict[str, Any] = api.call("GET", f"/cases/{order_id}", Role.OPERATOR).json()
    return case


def events_consumed(service_url: str, topic: str) -> int:
    """How many events of `topic` the service's consumers have decoded, from its /metrics."""
    text = httpx.get(f"{service_url}/metrics").text
    return int(
        sum(
            sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == "yellowcart_consumed_events_total" and sample.labels["topic"] == topic
        )
    )


async def redeliver(broker: LocalBroker, topic: str, event_type: str, order_id: str) -> None:
    """Publish an already-delivered record again, byte for byte (what a relay crash does)."""
    records = await read_records(broker.bootstrap_servers, topic, 1, settle_s=1)
    original = next(
        r
        for r in records
        if json.loads(r.value)["event_type"] == event_type
        and json.loads(r.value)["data"]["order_id"] == order_id
    )
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap_servers, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(
            topic, original.value, key=original.key, headers=list(original.headers)
        )
    finally:
        await producer.stop()


async def test_paid_order_is_cancelled_through_seller_and_platform_refunded_and_penalised(
    e2e_broker: LocalBroker, processes_factory: Any
) -> None:
    processes = processes_factory()
    api = Api(processes.start(*SERVICES), Settings(), uuid4().hex[:6])
    placed = paid_order(api)
    order_id = placed["order_id"]

    refused = api.cancel(order_id, "changed_mind", ok=(409,))
    assert f"POST /orders/{order_id}/cancellation-requests" in refused["detail"]

    wait_until(lambda: case_of(api, order_id)["order_paid"], "dispute service saw the payment")
    request = api.request_cancellation(order_id, "found_cheaper")
    filing = api.file_cancellation(order_id, "out_of_stock", request["request_id"])
    api.approve(filing["filing_id"])

    view = api.wait_for(
        order_id,
        lambda v: v["status"] == "cancelled" and v["penalty"] and v["payment"]["refunds"],
        "cancelled by the seller, refunded, penalised",
    )
    assert view["cancellation"]["cancelled_by"] == "seller"
    assert view["cancellation"]["reason"] == "out_of_stock"
    assert view["case"]["filings"][0]["status"] == "approved"

    performance = api.performance()
    assert performance["active_points"] == 3
    assert performance["cancellation_rate"] == 1.0
    assert performance["orders_in_window"] == 1
    assert performance["standing"] == "good"  # 3 points < 4; one order is below the rate minimum

    # the approval and the cancellation delivered twice change nothing
    order_url = f"http://127.0.0.1:{processes.ports['order']}"
    penalty_url = f"http://127.0.0.1:{processes.ports['penalty']}"
    before = events_consumed(order_url, "dispute.events")
    await redeliver(e2e_broker, "dispute.events", "SellerCancelApproved", order_id)
    wait_until(lambda: events_consumed(order_url, "dispute.events") > before, "redelivery")
    before = events_consumed(penalty_url, "order.events")
    await redeliver(e2e_broker, "order.events", "OrderCancelled", order_id)
    wait_until(lambda: events_consumed(penalty_url, "order.events") > before, "redelivery")

    order_events = await events_by_order(e2e_broker, "order.events", 4)
    assert [e["event_type"] for e in order_events[order_id]].count(
        "OrderCancelled"
    ) == 2  # 1 + the copy
    assert len({e["event_id"] for e in order_events[order_id]}) == 3  # placed, paid, cancelled
    payment_events = await events_by_order(e2e_broker, "payment.events", 3)
    refunds = [e for e in payment_events[order_id] if e["event_type"] == "RefundIssued"]
    assert [r["data"]["reason"] for r in refunds] == ["order_cancelled"]
    penalty_events = await events_by_order(e2e_broker, "penalty.events", 3)
    penalties = [e for e in penalty_events[order_id] if e["event_type"] == "PenaltyApplied"]
    assert [p["data"]["points"] for p in penalties] == [3]


def test_a_shipped_order_cannot_be_cancelled_by_the_seller(
    e2e_broker: LocalBroker, processes_factory: Any
) -> None:
    processes = processes_factory()
    api = Api(processes.start(*SERVICES), Settings(), uuid4().hex[:6])
    order_id = paid_order(api)["order_id"]
    api.call("POST", f"/orders/{order_id}/ship", Role.SELLER, json={"tracking_number": "JNE1"})
    wait_until(lambda: case_of(api, order_id)["order_shipped"], "dispute service saw shipping")

    refused = api.file_cancellation(order_id, "cannot_ship", ok=(409,))
    assert "shipped" in refused["detail"]
