"""Hostile input through the one base URL: every answer is a problem a person can read, never a
5xx, never a service's private route, never an internal address.

Each case here was a defect once (500 text/plain, a 307 to the order service's own port, the
order service's /health reached through `..%2F`, 404 on /metrics, decoder internals in a 401).
The services and the gateway run as separate processes on the local broker, as under `up`.
"""

from __future__ import annotations

import os
import signal
import time
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import uuid4

import httpx
import orjson
import pytest

from operations.catalog import published_routers
from operations.demo.client import Api
from operations.gateway import RouteTable
from shared.kernel.auth import Role
from shared.kernel.settings import Settings
from shared.kernel.webhooks import signed_headers
from tests.e2e.conftest import Processes

SERVICES = ("order", "payment", "seller-dispute", "penalty")
PROBLEM_JSON = "application/problem+json"


def assert_problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"].startswith(PROBLEM_JSON), response.headers
    problem: dict[str, Any] = response.json()
    assert problem["status"] == status and problem["detail"] and problem["type"], problem
    assert response.headers.get("connection", "keep-alive") != "close", "connection kept"
    return problem


def raw_get(client: httpx.Client, target: bytes, **kwargs: Any) -> httpx.Response:
    """A GET with the request target exactly as given (httpx would normalise `..`)."""
    return client.get("/", extensions={"target": target}, **kwargs)


@pytest.fixture
def system(processes_factory: Any) -> tuple[Processes, Api]:
    processes: Processes = processes_factory()
    base = processes.start(*SERVICES)
    return processes, Api(base, Settings(), uuid4().hex[:6])


def test_hostile_paths_headers_and_tokens_get_problem_details_from_the_gateway(
    system: tuple[Processes, Api],
) -> None:
    processes, api = system
    client, buyer = api.client, {"Authorization": f"Bearer {api.tokens[Role.BUYER]}"}
    order_port = str(processes.ports["order"])

    # control characters and encoded separators in a path never reach httpx-style errors
    for target in (b"/orders/%00", b"/payments/%00", b"/cases/%00", b"/sellers/%00/performance"):
        problem = assert_problem(raw_get(client, target, headers=buyer), 400)
        assert "path" in problem["detail"]
    newline = raw_get(client, b"/orders/%0A", headers=buyer)
    assert_problem(newline, 400)
    assert "location" not in newline.headers, "no redirect to an internal address"
    for target in (b"/orders/..%2F..%2Fhealth", b"/orders/../health", b"/orders/%2e%2e/health"):
        response = raw_get(client, target, headers=buyer)
        assert_problem(response, 400)
        assert "outbox_backlog" not in response.text, "the order service's own /health"

    # unknown routes, a trailing slash and a wrong method are the gateway's own problems
    assert_problem(client.get("/no-such-route"), 404)
    trailing = client.get("/orders/", headers=buyer)
    assert_problem(trailing, 404)
    assert order_port not in trailing.headers.get("location", "")
    wrong_method = client.delete("/orders", headers=buyer)
    assert "GET" in assert_problem(wrong_method, 405)["detail"]
    assert "POST" in wrong_method.headers["allow"]

    # a non-ASCII idempotency key is a located 422, not a 500 in the proxy
    key = "ключ-1".encode()
    odd_key = client.post(
        "/orders",
        content=orjson.dumps(_order(api.seller)),
        headers=[
            (b"Authorization", buyer["Authorization"].encode()),
            (b"Content-Type", b"application/json"),
            (b"Idempotency-Key", key),
        ],
    )
    assert "idempotency-key" in assert_problem(odd_key, 422)["detail"].lower()

    # tokens: no decoder internals; roles named in plain words
    for token in ("garbage\xb7".encode("latin-1"), b"a.b.c", b"eyJhbGciOiJub25lIn0.e30."):
        response = client.get("/orders", headers=[(b"Authorization", b"Bearer " + token)])
        detail = assert_problem(response, 401)["detail"]
        assert "codec" not in detail and "utf-8" not in detail and "byte" not in detail, detail
    operator = {"Authorization": f"Bearer {api.tokens[Role.OPERATOR]}"}
    forbidden = client.post("/orders", json=_order(api.seller), headers=operator)
    assert "signed in as an operator" in assert_problem(forbidden, 403)["detail"]

    # the connection survived all of that: a good request still works on it
    assert client.get("/orders", headers=buyer).status_code == 200

    # the gateway serves its own metrics, counting what it refused
    metrics = client.get("/metrics")
    assert metrics.status_code == 200
    assert "yellowcart_gateway_request_duration_seconds_bucket" in metrics.text
    assert 'yellowcart_gateway_refused_requests_total{reason="bad_path"}' in metrics.text
    assert "process_resident_memory_bytes" in metrics.text


def test_every_published_route_answers_bad_input_with_a_problem(
    system: tuple[Processes, Api],
) -> None:
    """One walk over every route the gateway publishes: no token or each role's, a malformed
    id, an unknown status filter, a body of wrong types. Each answer is a 4xx problem."""
    _, api = system
    client = api.client
    table = RouteTable.of_services(published_routers())
    assert len(table.routes) >= 12
    tokens = [f"Bearer {api.tokens[role]}" for role in Role]
    bad_query = {"status": "no-such-status"}
    wrong_types = {"seller_id": True, "items": "x", "reason": 5, "note": ["x"], "amount": "1"}
    walked = 0
    for route in table.routes:
        for method in sorted(route.methods):
            path = route.template
            for parameter in ("{order_id}", "{request_id}", "{filing_id}", "{seller_id}"):
                path = path.replace(parameter, "no%20such%20id")
            for authorization in (None, *tokens):
                headers = {"Authorization": authorization} if authorization else {}
                response = client.request(
                    method, path, json=wrong_types, headers=headers, params=bad_query
                )
                assert 400 <= response.status_code < 500, (method, path, response.text)
                assert response.headers["content-type"].startswith(PROBLEM_JSON), (method, path)
                walked += 1
    assert walked >= 4 * 12


def test_a_missing_upstream_is_a_503_and_the_merged_openapi_says_what_is_missing(
    system: tuple[Processes, Api],
) -> None:
    processes, api = system
    payment = processes.running["payment"]
    os.killpg(payment.pid, signal.SIGKILL)
    payment.wait(timeout=10)
    buyer = {"Authorization": f"Bearer {api.tokens[Role.BUYER]}"}
    down = api.client.get("/payments/ord-1", headers=buyer)
    assert_problem(down, 503)
    assert down.headers["retry-after"] == "1"
    document = api.client.get("/openapi.json").json()
    assert document["info"]["x-missing-services"] == ["payment"]
    assert "/orders" in document["paths"] and "/payments/{order_id}" not in document["paths"]
    assert "/metrics" in document["paths"], "the gateway's own routes are published"
    assert api.client.get("/orders", headers=buyer).status_code == 200, "others still serve"


def test_a_payment_of_the_wrong_amount_is_recorded_and_refunded_across_processes(
    system: tuple[Processes, Api],
) -> None:
    _, api = system
    placed = api.place("bank_transfer")
    order_id, due = placed["order_id"], placed["total_amount"]
    secret = api.settings.gateway_secret

    def callback(amount: int, reference: str, signed_at: datetime) -> httpx.Response:
        body = orjson.dumps(
            {
                "order_id": order_id,
                "gateway_reference": reference,
                "amount": amount,
                "paid_at": signed_at.isoformat(),
            }
        )
        headers = {"Content-Type": "application/json", **signed_headers(secret, body, signed_at)}
        deadline = time.monotonic() + 30
        while True:  # until the payment service has opened the intent
            response = api.client.post("/payments/callbacks", content=body, headers=headers)
            if response.status_code != 404 or time.monotonic() > deadline:
                return response
            time.sleep(0.2)

    stale = callback(due, "gw-stale", datetime.now(UTC) - timedelta(minutes=10))
    assert "window" in assert_problem(stale, 401)["detail"]
    mismatched = callback(due + 500, "gw-mismatch", datetime.now(UTC))
    assert mismatched.status_code == 200 and mismatched.json()["outcome"] == "refunded"
    view = api.wait_for(
        order_id,
        lambda v: v["payment"]["refunds"] and v["payment"].get("mismatched_payments"),
        "the mismatch and its refund in the order view",
    )
    [refund] = view["payment"]["refunds"]
    assert (refund["amount"], refund["reason"]) == (due + 500, "amount_mismatch")
    assert view["status"] == "awaiting_payment", "the order stays as it was"
    types = [entry["event_type"] for entry in view["timeline"]]
    assert "PaymentAmountMismatched" in types and "RefundIssued" in types
    assert "PaymentReceived" not in types


def _order(seller: str) -> dict[str, Any]:
    return {
        "seller_id": seller,
        "payment_method": "bank_transfer",
        "items": [{"sku": "KAOS-01", "variant": "kuning/L", "quantity": 2, "unit_price": 75000}],
        "shipping_address": {
            "recipient": "Siti",
            "phone": "081234567890",
            "street": "Jl. Melati 5",
            "city": "Bandung",
            "province": "Jawa Barat",
            "postal_code": "40115",
        },
    }
