"""The order and payment HTTP edges refuse bad input, hide other people's orders, and record
each command once. Rejections are asserted on an edge-only app with an empty store
(so "nothing stored" means no commit at all); flows that need payments run on one order +
payment stack per module."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from operations.localbroker import LocalBroker
from shared.kernel.auth import Role
from shared.kernel.webhooks import SIGNATURE_HEADER, TIMESTAMP_HEADER
from tests.conftest import eventually
from tests.integration.conftest import (
    EdgeFactory,
    Service,
    Tokens,
    assert_problem,
    callback_payload,
    order_body,
    pay,
    place_order,
    running_services,
    service_settings,
    signed_callback,
    uid,
)

pytestmark = [pytest.mark.broker, pytest.mark.asyncio(loop_scope="module")]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack(
    kafka: LocalBroker, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[dict[str, Service]]:
    settings = service_settings(kafka, Path(tmp_path_factory.mktemp("order-payment")))
    async with running_services(settings, ("order", "payment")) as services:
        yield services


@pytest.fixture
def order(stack: dict[str, Service]) -> Service:
    return stack["order"]


@pytest.fixture
def payment(stack: dict[str, Service]) -> Service:
    return stack["payment"]


def _events_of(events: list[Any], order_id: str, event_type: str | None = None) -> list[Any]:
    return [
        event
        for event in events
        if event.data.get("order_id") == order_id
        and (event_type is None or event.event_type == event_type)
    ]


def _item(**overrides: Any) -> dict[str, Any]:
    return {"sku": "TSHIRT-01", "variant": "red/XL", "quantity": 1, "unit_price": 89000} | overrides


def _address_without(*fields: str) -> dict[str, Any]:
    address: dict[str, Any] = dict(order_body("shop")["shipping_address"])
    for field in fields:
        del address[field]
    return address


# --- bad input: 4xx problem details, nothing stored ------------------------------------------

BAD_ORDERS: dict[str, tuple[dict[str, Any], str, str]] = {
    # case: (body overrides, expected error location, words the message must contain)
    "quantity_zero": ({"items": [_item(quantity=0)]}, "body.items.0.quantity", "greater than 0"),
    "quantity_negative": (
        {"items": [_item(quantity=-3)]},
        "body.items.0.quantity",
        "greater than 0",
    ),
    "unknown_payment_method": ({"payment_method": "bitcoin"}, "body.payment_method", "'ovo'"),
    "missing_address_fields": (
        {"shipping_address": _address_without("city", "postal_code")},
        "body.shipping_address.city",
        "Field required",
    ),
    "status_at_top_level": ({"status": "to_ship"}, "body.status", "Extra inputs"),
    "total_amount_at_top_level": ({"total_amount": 1}, "body.total_amount", "Extra inputs"),
    "unit_price_at_top_level": ({"unit_price": 1}, "body.unit_price", "Extra inputs"),
    "unknown_field_in_item": (
        {"items": [_item(discount_price=1)]},
        "body.items.0.discount_price",
        "Extra inputs",
    ),
    "unknown_field_in_address": (
        {"shipping_address": _address_without() | {"status": "paid"}},
        "body.shipping_address.status",
        "Extra inputs",
    ),
    "quantity_as_text": (
        {"items": [_item(quantity="two")]},
        "body.items.0.quantity",
        "valid integer",
    ),
    "items_not_a_list": ({"items": "TSHIRT-01"}, "body.items", "valid list"),
    "seller_id_as_number": ({"seller_id": 42}, "body.seller_id", "valid string"),
    # No coercion between JSON types (each was accepted and stored before).
    "quantity_true": ({"items": [_item(quantity=True)]}, "body.items.0.quantity", "integer"),
    "quantity_numeric_text": ({"items": [_item(quantity="2")]}, "body.items.0.quantity", "integer"),
    "quantity_float": ({"items": [_item(quantity=2.0)]}, "body.items.0.quantity", "integer"),
    "unit_price_numeric_text": (
        {"items": [_item(unit_price="75000")]},
        "body.items.0.unit_price",
        "integer",
    ),
    # Every number has an upper bound (10**30 was accepted and published before).
    "unit_price_huge": (
        {"items": [_item(unit_price=10**30)]},
        "body.items.0.unit_price",
        "less than or equal to 100000000",
    ),
    "quantity_over_limit": ({"items": [_item(quantity=1000)]}, "body.items.0.quantity", "999"),
    "total_over_limit": (
        {"items": [_item(quantity=999, unit_price=100_000_000)]},
        "body.items",
        "exceeds the 1000000000 rupiah limit",
    ),
    "too_many_items": ({"items": [_item()] * 51}, "body.items", "at most 50"),
    # Printable, bounded text (a NUL in a sku was accepted before).
    "nul_in_sku": ({"items": [_item(sku="TSHIRT\x0001")]}, "body.items.0.sku", "pattern"),
    "newline_in_city": (
        {"shipping_address": _address_without() | {"city": "Bandung\nX"}},
        "body.shipping_address.city",
        "pattern",
    ),
    "long_street": (
        {"shipping_address": _address_without() | {"street": "x" * 241}},
        "body.shipping_address.street",
        "at most 240",
    ),
    "seller_id_with_slash": ({"seller_id": "../shop"}, "body.seller_id", "pattern"),
}


@pytest.mark.parametrize("case", BAD_ORDERS)
async def test_bad_order_is_refused_with_located_errors_and_nothing_stored(
    edge: EdgeFactory, tokens: Tokens, case: str
) -> None:
    overrides, location, words = BAD_ORDERS[case]
    async with edge("order") as order:
        response = await order.client.post(
            "/orders", json=order_body(uid("shop")) | overrides, headers=tokens.buyer("b-1")
        )
        problem = assert_problem(response, 422)
        locations = {error["location"]: error["message"] for error in problem["errors"]}
        assert location in locations, problem
        assert words in locations[location], problem
        assert location in problem["detail"] and words in problem["detail"]
        assert await order.stored_events() == []
        listed = await order.client.get("/orders", headers=tokens.buyer("b-1"))
        assert listed.status_code == 200 and listed.json() == [], "the buyer's list is unchanged"


async def test_order_body_that_is_not_json_is_refused(edge: EdgeFactory, tokens: Tokens) -> None:
    async with edge("order") as order:
        response = await order.client.post(
            "/orders",
            content=b'{"seller_id": "shop-1", "items": [',
            headers={**tokens.buyer("b-1"), "Content-Type": "application/json"},
        )
        problem = assert_problem(response, 422)
        assert "JSON" in problem["detail"]
        assert await order.stored_events() == []


def _oversized_valid_order(limit: int) -> bytes:
    """A valid order padded with JSON whitespace past the limit: without the limit it is placed."""
    body = json.dumps(order_body(uid("shop"))).encode()
    return body + b" " * (limit + 1 - len(body))


async def test_oversized_body_with_content_length_is_refused_before_reading(
    edge: EdgeFactory, tokens: Tokens
) -> None:
    async with edge("order") as order:
        body = _oversized_valid_order(order.settings.max_body_bytes)
        response = await order.client.post(
            "/orders",
            content=body,
            headers={**tokens.buyer("b-1"), "Content-Type": "application/json"},
        )
        problem = assert_problem(response, 413)
        assert str(order.settings.max_body_bytes) in problem["detail"]
        assert await order.stored_events() == []


async def test_oversized_streamed_body_without_content_length_is_refused(
    edge: EdgeFactory, tokens: Tokens
) -> None:
    async with edge("order") as order:
        body = _oversized_valid_order(order.settings.max_body_bytes)

        async def chunks() -> AsyncIterator[bytes]:
            for start in range(0, len(body), 1024):
                yield body[start : start + 1024]

        request = order.client.build_request(
            "POST",
            "/orders",
            content=chunks(),
            headers={**tokens.buyer("b-1"), "Content-Type": "application/json"},
        )
        assert "content-length" not in request.headers
        response = await order.client.send(request)
        problem = assert_problem(response, 413)
        assert str(order.settings.max_body_bytes) in problem["detail"]
        assert await order.stored_events() == []


# --- who may call --------------------------------------------------------------------------


async def test_order_without_valid_token_is_refused_as_unauthorized(
    edge: EdgeFactory, tokens: Tokens
) -> None:
    forged = tokens.headers(
        Role.BUYER, "b-1", secret="not-the-services-secret-but-long-enough-for-hs256"
    )
    expired = tokens.headers(
        Role.BUYER, "b-1", issued_at=datetime.now(UTC) - timedelta(hours=2), ttl=timedelta(hours=1)
    )
    async with edge("order") as order:
        for headers in ({}, forged, expired, {"Authorization": "Bearer not-a-jwt"}):
            response = await order.client.post(
                "/orders", json=order_body(uid("shop")), headers=headers
            )
            assert_problem(response, 401)
            assert response.headers["WWW-Authenticate"] == "Bearer"
        assert await order.stored_events() == []
        accepted = await order.client.post(
            "/orders", json=order_body(uid("shop")), headers=tokens.buyer("b-1")
        )
        assert accepted.status_code == 201, "the same body with a valid token is accepted"


async def test_seller_cannot_place_an_order(edge: EdgeFactory, tokens: Tokens) -> None:
    async with edge("order") as order:
        response = await order.client.post(
            "/orders", json=order_body(uid("shop")), headers=tokens.seller("shop-x")
        )
        problem = assert_problem(response, 403)
        assert "buyer" in problem["detail"]
        assert await order.stored_events() == []


async def test_other_peoples_orders_are_not_found(edge: EdgeFactory, tokens: Tokens) -> None:
    buyer, seller = uid("buyer"), uid("shop")
    async with edge("order") as order:
        order_id = (await place_order(order, tokens, buyer, seller))["order_id"]
        other_buyer, other_seller = tokens.buyer(uid("buyer")), tokens.seller(uid("shop"))
        for path in (f"/orders/{order_id}", f"/orders/{order_id}/timeline"):
            for headers in (other_buyer, other_seller):
                problem = assert_problem(await order.client.get(path, headers=headers), 404)
                assert problem["detail"] == f"order {order_id} not found"
            for headers in (tokens.buyer(buyer), tokens.seller(seller), tokens.operator()):
                assert (await order.client.get(path, headers=headers)).status_code == 200
        cancel = await order.client.post(
            f"/orders/{order_id}/cancel", json={"reason": "changed_mind"}, headers=other_buyer
        )
        assert_problem(cancel, 404)
        ship = await order.client.post(f"/orders/{order_id}/ship", headers=other_seller)
        assert_problem(ship, 404)
        stored = await order.stored_events()
        assert [event.event_type for event in stored] == ["OrderPlaced"]


async def test_unknown_order_and_another_buyers_order_look_the_same(
    edge: EdgeFactory, tokens: Tokens
) -> None:
    async with edge("order") as order:
        order_id = (await place_order(order, tokens, uid("buyer"), uid("shop")))["order_id"]
        stranger = tokens.buyer(uid("buyer"))
        theirs = (await order.client.get(f"/orders/{order_id}", headers=stranger)).json()
        missing = (await order.client.get("/orders/ord-missing", headers=stranger)).json()
        assert {key for key in theirs} == {key for key in missing}
        assert theirs["detail"].replace(order_id, "X") == missing["detail"].replace(
            "ord-missing", "X"
        )


# --- idempotency ---------------------------------------------------------------------------


async def test_same_post_with_idempotency_key_places_one_order(
    edge: EdgeFactory, tokens: Tokens
) -> None:
    body, headers = order_body(uid("shop")), {**tokens.buyer("b-1"), "Idempotency-Key": "k-1"}
    async with edge("order") as order:
        first = await order.client.post("/orders", json=body, headers=headers)
        second = await order.client.post("/orders", json=body, headers=headers)
        assert first.status_code == second.status_code == 201
        assert first.json()["order_id"] == second.json()["order_id"]
        assert second.headers.get("Idempotent-Replayed") == "true"
        placed = [e for e in await order.stored_events() if e.event_type == "OrderPlaced"]
        assert [event.data["order_id"] for event in placed] == [first.json()["order_id"]]
        other_key = await order.client.post(
            "/orders", json=body, headers={**headers, "Idempotency-Key": "k-2"}
        )
        assert other_key.json()["order_id"] != first.json()["order_id"]


async def test_an_idempotency_key_reused_for_a_different_order_is_refused(
    edge: EdgeFactory, tokens: Tokens
) -> None:
    headers = {**tokens.buyer("b-1"), "Idempotency-Key": "k-1"}
    async with edge("order") as order:
        first = await order.client.post("/orders", json=order_body("shop-a"), headers=headers)
        assert first.status_code == 201
        reused = await order.client.post("/orders", json=order_body("shop-b"), headers=headers)
        assert reused.status_code == 422
        assert "Idempotency-Key was already used" in reused.json()["detail"]
        placed = [e for e in await order.stored_events() if e.event_type == "OrderPlaced"]
        assert len(placed) == 1


# --- buyer cancel --------------------------------------------------------------------------


async def test_buyer_cancels_unpaid_order_at_once_and_view_says_by_buyer(
    order: Service, tokens: Tokens
) -> None:
    buyer = uid("buyer")
    order_id = (await place_order(order, tokens, buyer, uid("shop")))["order_id"]
    response = await order.client.post(
        f"/orders/{order_id}/cancel", json={"reason": "found_cheaper"}, headers=tokens.buyer(buyer)
    )
    assert response.status_code == 200, response.text
    assert response.json() == {"order_id": order_id, "status": "cancelled"}

    async def view_says_cancelled_by_buyer() -> bool:
        view = (await order.client.get(f"/orders/{order_id}", headers=tokens.buyer(buyer))).json()
        cancellation = view.get("cancellation") or {}
        return (
            view["status"] == "cancelled"
            and cancellation.get("cancelled_by") == "buyer"
            and cancellation.get("reason") == "found_cheaper"
        )

    await eventually(view_says_cancelled_by_buyer, what="the view to show the buyer's cancel")


async def test_cancel_with_reason_other_needs_a_note(order: Service, tokens: Tokens) -> None:
    buyer = uid("buyer")
    order_id = (await place_order(order, tokens, buyer, uid("shop")))["order_id"]
    response = await order.client.post(
        f"/orders/{order_id}/cancel", json={"reason": "other"}, headers=tokens.buyer(buyer)
    )
    problem = assert_problem(response, 422)
    assert "note" in problem["detail"]
    assert _events_of(await order.stored_events(), order_id, "OrderCancelled") == []


async def test_cancel_with_unknown_reason_lists_the_allowed_ones(
    order: Service, tokens: Tokens
) -> None:
    buyer = uid("buyer")
    order_id = (await place_order(order, tokens, buyer, uid("shop")))["order_id"]
    response = await order.client.post(
        f"/orders/{order_id}/cancel", json={"reason": "bored"}, headers=tokens.buyer(buyer)
    )
    problem = assert_problem(response, 422)
    [error] = problem["errors"]
    assert error["location"] == "body.reason"
    for allowed in ("changed_mind", "wrong_item_or_variant", "price", "found_cheaper", "other"):
        assert f"'{allowed}'" in error["message"]
    assert _events_of(await order.stored_events(), order_id, "OrderCancelled") == []


async def test_paid_order_cannot_be_cancelled_by_buyer_and_409_names_the_request_route(
    order: Service, payment: Service, tokens: Tokens
) -> None:
    buyer = uid("buyer")
    accepted = await place_order(order, tokens, buyer, uid("shop"))
    order_id = accepted["order_id"]
    await pay(order, payment, tokens, buyer, accepted)
    response = await order.client.post(
        f"/orders/{order_id}/cancel", json={"reason": "changed_mind"}, headers=tokens.buyer(buyer)
    )
    problem = assert_problem(response, 409)
    assert f"POST /orders/{order_id}/cancellation-requests" in problem["detail"]
    assert _events_of(await order.stored_events(), order_id, "OrderCancelled") == []


# --- gateway callbacks ---------------------------------------------------------------------


async def _open_intent(
    order: Service, payment: Service, tokens: Tokens
) -> tuple[str, dict[str, Any]]:
    buyer = uid("buyer")
    accepted = await place_order(order, tokens, buyer, uid("shop"))

    async def intent_open() -> bool:
        response = await payment.client.get(
            f"/payments/{accepted['order_id']}", headers=tokens.buyer(buyer)
        )
        return response.status_code == 200

    await eventually(intent_open, what="the payment intent")
    return buyer, accepted


async def test_callback_without_or_with_forged_signature_records_nothing(
    order: Service, payment: Service, tokens: Tokens
) -> None:
    _, accepted = await _open_intent(order, payment, tokens)
    order_id = accepted["order_id"]
    body, headers = signed_callback(
        payment.settings, callback_payload(order_id, accepted["total_amount"])
    )
    _, forged = signed_callback(
        payment.settings,
        callback_payload(order_id, accepted["total_amount"]),
        secret="not-the-gateway-secret-but-as-long-as-a-real-one",
    )
    unsigned = {"Content-Type": "application/json"}
    for attempt in (unsigned, {**headers, SIGNATURE_HEADER: forged[SIGNATURE_HEADER]}):
        response = await payment.client.post("/payments/callbacks", content=body, headers=attempt)
        problem = assert_problem(response, 401)
        assert SIGNATURE_HEADER in problem["detail"]
    assert _events_of(await payment.stored_events(), order_id, "PaymentReceived") == []
    accepted_reply = await payment.client.post("/payments/callbacks", content=body, headers=headers)
    assert accepted_reply.json()["outcome"] == "accepted", "the same body, signed, is accepted"


async def test_callback_signed_over_another_body_is_refused(
    order: Service, payment: Service, tokens: Tokens
) -> None:
    _, accepted = await _open_intent(order, payment, tokens)
    order_id = accepted["order_id"]
    body, headers = signed_callback(
        payment.settings, callback_payload(order_id, accepted["total_amount"])
    )
    tampered = body.replace(b'"gw-', b'"gx-')
    assert tampered != body
    response = await payment.client.post("/payments/callbacks", content=tampered, headers=headers)
    assert_problem(response, 401)
    assert _events_of(await payment.stored_events(), order_id, "PaymentReceived") == []


async def test_same_callback_twice_records_one_payment(
    order: Service, payment: Service, tokens: Tokens
) -> None:
    _, accepted = await _open_intent(order, payment, tokens)
    order_id = accepted["order_id"]
    body, headers = signed_callback(
        payment.settings, callback_payload(order_id, accepted["total_amount"])
    )
    first = await payment.client.post("/payments/callbacks", content=body, headers=headers)
    second = await payment.client.post("/payments/callbacks", content=body, headers=headers)
    assert first.status_code == second.status_code == 200, second.text
    assert first.json()["outcome"] == "accepted"
    assert second.json()["outcome"] == "duplicate"
    received = _events_of(await payment.stored_events(), order_id, "PaymentReceived")
    assert len(received) == 1
    refunds = _events_of(await payment.stored_events(), order_id, "RefundIssued")
    assert refunds == [], "a repeated callback is not a second payment to refund"


async def test_callback_with_wrong_amount_is_recorded_and_refunded_in_full(
    order: Service, payment: Service, tokens: Tokens
) -> None:
    """Money the provider says arrived never vanishes: a payment of another amount than is due
    is recorded (PaymentAmountMismatched) and refunded for exactly that amount, and the order
    can still be paid the right amount. (Before, it was refused with 422 and lost.)"""
    buyer, accepted = await _open_intent(order, payment, tokens)
    order_id, due = accepted["order_id"], accepted["total_amount"]
    body, headers = signed_callback(payment.settings, callback_payload(order_id, due - 1))
    response = await payment.client.post("/payments/callbacks", content=body, headers=headers)
    assert response.status_code == 200, response.text
    assert response.json()["outcome"] == "refunded"
    after = _events_of(await payment.stored_events(), order_id)
    kinds = [event.event_type for event in after]
    assert kinds == ["PaymentRequested", "PaymentAmountMismatched", "RefundIssued"]
    mismatch, refund = after[1].data, after[2].data
    assert (mismatch["amount"], mismatch["amount_due"]) == (due - 1, due)
    assert (refund["amount"], refund["reason"]) == (due - 1, "amount_mismatch")
    assert refund["gateway_reference"] == mismatch["gateway_reference"]
    view = await payment.client.get(f"/payments/{order_id}", headers=tokens.buyer(buyer))
    assert view.json()["status"] == "awaiting_payment", "the order stays as it was"
    again = await payment.client.post("/payments/callbacks", content=body, headers=headers)
    assert again.json()["outcome"] == "duplicate", "a retried callback is not refunded twice"
    right, right_headers = signed_callback(payment.settings, callback_payload(order_id, due))
    paid = await payment.client.post("/payments/callbacks", content=right, headers=right_headers)
    assert paid.json()["outcome"] == "accepted"


async def test_callback_replayed_after_the_window_is_refused(
    order: Service, payment: Service, tokens: Tokens
) -> None:
    _, accepted = await _open_intent(order, payment, tokens)
    order_id = accepted["order_id"]
    window = timedelta(seconds=payment.settings.callback_tolerance_s)
    for signed_at in (datetime.now(UTC) - window * 2, datetime.now(UTC) + window * 2):
        body, headers = signed_callback(
            payment.settings, callback_payload(order_id, accepted["total_amount"]), at=signed_at
        )
        response = await payment.client.post("/payments/callbacks", content=body, headers=headers)
        problem = assert_problem(response, 401)
        assert "window" in problem["detail"]
    kinds = [event.event_type for event in _events_of(await payment.stored_events(), order_id)]
    assert kinds == ["PaymentRequested"], "nothing recorded from a stale callback"


async def test_callback_signature_hex_is_case_insensitive(
    order: Service, payment: Service, tokens: Tokens
) -> None:
    _, accepted = await _open_intent(order, payment, tokens)
    body, headers = signed_callback(
        payment.settings, callback_payload(accepted["order_id"], accepted["total_amount"])
    )
    headers[SIGNATURE_HEADER] = headers[SIGNATURE_HEADER].upper()
    assert headers[TIMESTAMP_HEADER].isdigit()
    response = await payment.client.post("/payments/callbacks", content=body, headers=headers)
    assert response.status_code == 200, response.text
    assert response.json()["outcome"] == "accepted"


async def test_signed_callback_that_breaks_the_schema_gets_located_errors(
    order: Service, payment: Service, tokens: Tokens
) -> None:
    _, accepted = await _open_intent(order, payment, tokens)
    order_id = accepted["order_id"]
    payload = callback_payload(order_id, accepted["total_amount"]) | {
        "amount": "lots",
        "status": "paid",
    }
    body, headers = signed_callback(payment.settings, payload)
    response = await payment.client.post("/payments/callbacks", content=body, headers=headers)
    problem = assert_problem(response, 422)
    assert {error["location"] for error in problem["errors"]} == {"body.amount", "body.status"}
    after = _events_of(await payment.stored_events(), order_id)
    assert [event.event_type for event in after] == ["PaymentRequested"]


# --- reading -------------------------------------------------------------------------------


async def test_payment_is_visible_to_its_buyer_and_operators_only(
    order: Service, payment: Service, tokens: Tokens
) -> None:
    buyer, accepted = await _open_intent(order, payment, tokens)
    path = f"/payments/{accepted['order_id']}"
    mine = await payment.client.get(path, headers=tokens.buyer(buyer))
    assert mine.status_code == 200
    assert mine.json()["amount"] == accepted["total_amount"]
    assert_problem(await payment.client.get(path, headers=tokens.buyer(uid("buyer"))), 404)
    assert_problem(await payment.client.get(path, headers=tokens.seller(uid("shop"))), 404)
    assert_problem(await payment.client.get(path), 401)
    operator = await payment.client.get(path, headers=tokens.operator())
    assert operator.status_code == 200
    assert operator.json() == mine.json()


async def test_order_lists_show_each_status_tab_to_its_buyer_and_seller(
    order: Service, payment: Service, tokens: Tokens
) -> None:
    buyer, seller = uid("buyer"), uid("shop")
    unpaid = await place_order(order, tokens, buyer, seller)
    to_ship = await place_order(order, tokens, buyer, seller)
    shipped = await place_order(order, tokens, buyer, seller)
    cancelled = await place_order(order, tokens, buyer, seller)
    await pay(order, payment, tokens, buyer, to_ship)
    await pay(order, payment, tokens, buyer, shipped)
    ship = await order.client.post(
        f"/orders/{shipped['order_id']}/ship", headers=tokens.seller(seller)
    )
    assert ship.status_code == 200, ship.text
    cancel = await order.client.post(
        f"/orders/{cancelled['order_id']}/cancel",
        json={"reason": "changed_mind"},
        headers=tokens.buyer(buyer),
    )
    assert cancel.status_code == 200, cancel.text
    expected = {
        "awaiting_payment": {unpaid["order_id"]},
        "to_ship": {to_ship["order_id"]},
        "shipped": {shipped["order_id"]},
        "cancelled": {cancelled["order_id"]},
    }
    expected["all"] = set().union(*expected.values())

    async def tabs_are(headers: dict[str, str], want: dict[str, set[str]]) -> bool:
        for tab, ids in want.items():
            response = await order.client.get("/orders", params={"status": tab}, headers=headers)
            assert response.status_code == 200, response.text
            if {view["order_id"] for view in response.json()} != ids:
                return False
        return True

    for headers in (tokens.buyer(buyer), tokens.seller(seller)):
        await eventually(partial(tabs_are, headers, expected), what="the status tabs")
    nothing: dict[str, set[str]] = {tab: set() for tab in expected}
    assert await tabs_are(tokens.buyer(uid("buyer")), nothing)
    assert await tabs_are(tokens.seller(uid("shop")), nothing)
    unknown_tab = await order.client.get(
        "/orders", params={"status": "paid"}, headers=tokens.buyer(buyer)
    )
    assert_problem(unknown_tab, 422)
    assert_problem(await order.client.get("/orders", headers=tokens.operator()), 403)


# --- one instant per command ---------------------------------------------------------------


async def test_the_deadline_told_to_the_buyer_is_the_one_the_payment_service_keeps(
    order: Service, payment: Service, tokens: Tokens
) -> None:
    """The 201's payment_deadline_at and the payment service's deadline_at are one instant, to
    the microsecond, and an idempotent retry answers the same instant again."""
    buyer = uid("buyer")
    headers = {**tokens.buyer(buyer), "Idempotency-Key": uid("key")}
    body = order_body(uid("shop"))
    first = await order.client.post("/orders", json=body, headers=headers)
    assert first.status_code == 201
    order_id, told = first.json()["order_id"], first.json()["payment_deadline_at"]
    retried = await order.client.post("/orders", json=body, headers=headers)
    assert retried.headers.get("Idempotent-Replayed") == "true"
    assert retried.json()["payment_deadline_at"] == told

    async def payment_view() -> dict[str, Any] | None:
        answer = await payment.client.get(f"/payments/{order_id}", headers=tokens.buyer(buyer))
        return answer.json() if answer.status_code == 200 else None

    await eventually(lambda: _is_present(payment_view()), what="the payment intent")
    kept = await payment_view()
    assert kept is not None
    assert datetime.fromisoformat(kept["deadline_at"]) == datetime.fromisoformat(told)


async def _is_present(view: Awaitable[dict[str, Any] | None]) -> bool:
    return await view is not None
