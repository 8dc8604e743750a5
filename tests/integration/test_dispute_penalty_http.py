"""The seller-dispute and penalty HTTP edges: sellers act only on their own shop's orders, only
operators decide, and the refusals name the way that exists. Runs one stack of all
four services per module: the dispute service learns orders only from order events."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from operations.localbroker import LocalBroker
from services.seller_dispute.domain import OrderFacts
from tests.conftest import eventually
from tests.integration.conftest import (
    Service,
    Tokens,
    assert_problem,
    pay,
    place_order,
    running_services,
    service_settings,
    uid,
)

pytestmark = [pytest.mark.broker, pytest.mark.asyncio(loop_scope="module")]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack(
    kafka: LocalBroker, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[dict[str, Service]]:
    settings = service_settings(kafka, Path(tmp_path_factory.mktemp("dispute-penalty")))
    names = ("order", "payment", "seller-dispute", "penalty")
    async with running_services(settings, names) as services:
        yield services


@pytest.fixture
def order(stack: dict[str, Service]) -> Service:
    return stack["order"]


@pytest.fixture
def payment(stack: dict[str, Service]) -> Service:
    return stack["payment"]


@pytest.fixture
def dispute(stack: dict[str, Service]) -> Service:
    return stack["seller-dispute"]


@pytest.fixture
def penalty(stack: dict[str, Service]) -> Service:
    return stack["penalty"]


async def dispute_knows(
    dispute: Service, order_id: str, holds: Callable[[OrderFacts], bool], what: str
) -> None:
    """Wait until the dispute service's own read of the order events satisfies `holds`."""

    async def known() -> bool:
        facts = await dispute.app.state.context.cases.facts(order_id)
        return facts is not None and holds(facts)

    await eventually(known, what=f"the dispute service to know {order_id} {what}")


async def paid_order(
    stack: dict[str, Service], tokens: Tokens, buyer: str, seller: str
) -> dict[str, Any]:
    """An order paid and known as paid to the dispute service."""
    accepted = await place_order(stack["order"], tokens, buyer, seller)
    await pay(stack["order"], stack["payment"], tokens, buyer, accepted)
    await dispute_knows(
        stack["seller-dispute"],
        accepted["order_id"],
        lambda facts: facts.paid_at is not None,
        "paid",
    )
    return accepted


async def _case_events(dispute: Service, order_id: str) -> list[str]:
    return [e.event_type for e in await dispute.stored_events() if e.data["order_id"] == order_id]


async def test_seller_cannot_file_cancellation_of_another_shops_order(
    stack: dict[str, Service], dispute: Service, tokens: Tokens
) -> None:
    seller = uid("shop")
    order_id = (await paid_order(stack, tokens, uid("buyer"), seller))["order_id"]
    path = f"/orders/{order_id}/seller-cancellations"
    other = await dispute.client.post(
        path, json={"reason": "out_of_stock"}, headers=tokens.seller(uid("shop"))
    )
    problem = assert_problem(other, 404)
    assert order_id in problem["detail"]
    assert await _case_events(dispute, order_id) == []
    own = await dispute.client.post(
        path, json={"reason": "out_of_stock"}, headers=tokens.seller(seller)
    )
    assert own.status_code == 201, own.text


async def test_seller_cannot_decline_a_request_on_another_shops_order(
    stack: dict[str, Service], dispute: Service, tokens: Tokens
) -> None:
    buyer, seller = uid("buyer"), uid("shop")
    order_id = (await paid_order(stack, tokens, buyer, seller))["order_id"]
    requested = await dispute.client.post(
        f"/orders/{order_id}/cancellation-requests",
        json={"reason": "changed_mind"},
        headers=tokens.buyer(buyer),
    )
    assert requested.status_code == 201, requested.text
    path = f"/cancellation-requests/{requested.json()['request_id']}/decline"
    other = await dispute.client.post(path, headers=tokens.seller(uid("shop")))
    assert_problem(other, 404)
    assert await _case_events(dispute, order_id) == ["BuyerCancellationRequested"]
    own = await dispute.client.post(path, headers=tokens.seller(seller))
    assert own.status_code == 200, own.text
    assert own.json()["requests"][0]["status"] == "declined"


async def test_only_operators_decide_seller_cancellations(
    stack: dict[str, Service], dispute: Service, tokens: Tokens
) -> None:
    buyer, seller = uid("buyer"), uid("shop")
    order_id = (await paid_order(stack, tokens, buyer, seller))["order_id"]
    filed = await dispute.client.post(
        f"/orders/{order_id}/seller-cancellations",
        json={"reason": "cannot_ship"},
        headers=tokens.seller(seller),
    )
    assert filed.status_code == 201, filed.text
    filing_id = filed.json()["filing_id"]

    async def queued() -> bool:
        listing = await dispute.client.get("/seller-cancellations", headers=tokens.operator())
        return filing_id in {filing["filing_id"] for filing in listing.json()}

    await eventually(queued, what="the filing in the operators' review queue")
    for headers in (tokens.buyer(buyer), tokens.seller(seller)):
        assert_problem(await dispute.client.get("/seller-cancellations", headers=headers), 403)
    for decision in ("approve", "reject"):
        path = f"/seller-cancellations/{filing_id}/{decision}"
        for headers, role in ((tokens.buyer(buyer), "buyer"), (tokens.seller(seller), "seller")):
            problem = assert_problem(await dispute.client.post(path, headers=headers), 403)
            assert "operator" in problem["detail"] and role in problem["detail"]
    assert await _case_events(dispute, order_id) == ["SellerCancelRequested"]
    approved = await dispute.client.post(
        f"/seller-cancellations/{filing_id}/approve", headers=tokens.operator()
    )
    assert approved.status_code == 200, approved.text
    assert approved.json()["approved_id"] == filing_id


async def test_unknown_seller_reason_is_refused_with_the_allowed_ones(
    stack: dict[str, Service], dispute: Service, tokens: Tokens
) -> None:
    seller = uid("shop")
    order_id = (await paid_order(stack, tokens, uid("buyer"), seller))["order_id"]
    response = await dispute.client.post(
        f"/orders/{order_id}/seller-cancellations",
        json={"reason": "buyer_asked"},
        headers=tokens.seller(seller),
    )
    problem = assert_problem(response, 422)
    [error] = problem["errors"]
    assert error["location"] == "body.reason"
    assert "'out_of_stock'" in error["message"] and "'cannot_ship'" in error["message"]
    assert await _case_events(dispute, order_id) == []


async def test_buyer_request_on_unpaid_order_is_refused_naming_cancel(
    order: Service, dispute: Service, tokens: Tokens
) -> None:
    buyer = uid("buyer")
    order_id = (await place_order(order, tokens, buyer, uid("shop")))["order_id"]
    await dispute_knows(dispute, order_id, lambda facts: facts.buyer_id == buyer, "placed")
    response = await dispute.client.post(
        f"/orders/{order_id}/cancellation-requests",
        json={"reason": "changed_mind"},
        headers=tokens.buyer(buyer),
    )
    problem = assert_problem(response, 409)
    assert f"POST /orders/{order_id}/cancel" in problem["detail"]
    assert await _case_events(dispute, order_id) == []


async def test_shipped_order_cannot_be_cancelled_by_seller_filing(
    stack: dict[str, Service], order: Service, dispute: Service, tokens: Tokens
) -> None:
    seller = uid("shop")
    order_id = (await paid_order(stack, tokens, uid("buyer"), seller))["order_id"]
    shipped = await order.client.post(f"/orders/{order_id}/ship", headers=tokens.seller(seller))
    assert shipped.status_code == 200, shipped.text
    await dispute_knows(dispute, order_id, lambda facts: facts.shipped, "shipped")
    response = await dispute.client.post(
        f"/orders/{order_id}/seller-cancellations",
        json={"reason": "out_of_stock"},
        headers=tokens.seller(seller),
    )
    problem = assert_problem(response, 409)
    assert "shipped" in problem["detail"]
    assert await _case_events(dispute, order_id) == []


async def test_performance_is_visible_to_that_seller_and_operators_only(
    stack: dict[str, Service], penalty: Service, tokens: Tokens
) -> None:
    seller = uid("shop")
    await place_order(stack["order"], tokens, uid("buyer"), seller)
    path = f"/sellers/{seller}/performance"

    async def counted() -> bool:
        response = await penalty.client.get(path, headers=tokens.seller(seller))
        return response.status_code == 200 and response.json()["orders_in_window"] == 1

    await eventually(counted, what="the penalty service to count the order")
    problem = assert_problem(
        await penalty.client.get(path, headers=tokens.seller(uid("shop"))), 404
    )
    assert seller in problem["detail"]
    assert_problem(await penalty.client.get(path, headers=tokens.buyer(uid("buyer"))), 403)
    assert_problem(await penalty.client.get(path), 401)
    operator = await penalty.client.get(path, headers=tokens.operator())
    assert operator.status_code == 200
    assert operator.json()["seller_id"] == seller
    assert operator.json()["orders_in_window"] == 1
