"""Each service documents the public routes it owns — request body, success response and
problem-details errors — and answers /health and /metrics while running."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from prometheus_client.parser import text_string_to_metric_families

from operations.catalog import SERVICES
from operations.localbroker import LocalBroker
from shared.kernel.webhooks import SIGNATURE_HEADER
from tests.conftest import eventually
from tests.integration.conftest import (
    PROBLEM_JSON,
    Service,
    running_services,
    service_settings,
)

pytestmark = [pytest.mark.broker, pytest.mark.asyncio(loop_scope="module")]

ERROR_STATUSES = ("401", "403", "404", "409", "422")


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    success: str
    body_fields: frozenset[str] = frozenset()  # empty: the route takes no body
    body_required: bool = True
    bearer: bool = True


def _route(method: str, path: str, success: str = "200", *fields: str, **kw: Any) -> Route:
    return Route(method, path, success, frozenset(fields), **kw)


OWNED_ROUTES: dict[str, tuple[Route, ...]] = {
    "order": (
        _route(
            "post", "/orders", "201", "seller_id", "items", "shipping_address", "payment_method"
        ),
        _route("get", "/orders"),
        _route("get", "/orders/{order_id}"),
        _route("get", "/orders/{order_id}/timeline"),
        _route("post", "/orders/{order_id}/cancel", "200", "reason", "note"),
        _route("post", "/orders/{order_id}/ship", "200", "tracking_number", body_required=False),
    ),
    "payment": (
        _route(
            "post",
            "/payments/callbacks",
            "200",
            "order_id",
            "gateway_reference",
            "amount",
            "paid_at",
            bearer=False,
        ),
        _route("get", "/payments/{order_id}"),
    ),
    "seller-dispute": (
        _route("post", "/orders/{order_id}/cancellation-requests", "201", "reason", "note"),
        _route(
            "post",
            "/cancellation-requests/{request_id}/decline",
            "200",
            "note",
            body_required=False,
        ),
        _route("post", "/orders/{order_id}/seller-cancellations", "201", "reason", "note"),
        _route(
            "post", "/seller-cancellations/{filing_id}/approve", "200", "note", body_required=False
        ),
        _route(
            "post", "/seller-cancellations/{filing_id}/reject", "200", "note", body_required=False
        ),
    ),
    "penalty": (_route("get", "/sellers/{seller_id}/performance"),),
}

CONSUMER_GROUPS = {
    "order": {"order.reactions", "order.view"},
    "payment": {"payment.reactions"},
    "seller-dispute": {"seller-dispute.facts", "seller-dispute.review-queue"},
    "penalty": {"penalty.records"},
}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack(
    kafka: LocalBroker, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[dict[str, Service]]:
    settings = service_settings(kafka, Path(tmp_path_factory.mktemp("openapi")))
    async with running_services(settings, SERVICES) as services:
        yield services


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def documents(stack: dict[str, Service]) -> dict[str, dict[str, Any]]:
    openapi: dict[str, dict[str, Any]] = {}
    for name, service in stack.items():
        response = await service.client.get("/openapi.json")
        assert response.status_code == 200
        openapi[name] = response.json()
    return openapi


def _resolve(document: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    """Follow a `$ref`, or the one `$ref` of an optional body (`anyOf: [ref, null]`)."""
    if "anyOf" in schema:
        [schema] = [part for part in schema["anyOf"] if part.get("type") != "null"]
    ref = schema.get("$ref")
    if ref is None:
        return schema
    resolved: dict[str, Any] = document["components"]["schemas"][ref.rsplit("/", 1)[-1]]
    return resolved


def _cases() -> list[Any]:
    return [
        pytest.param(name, route, id=f"{name} {route.method.upper()} {route.path}")
        for name, routes in OWNED_ROUTES.items()
        for route in routes
    ]


@pytest.mark.parametrize(("service", "route"), _cases())
async def test_route_is_documented_with_body_success_and_problem_errors(
    documents: dict[str, dict[str, Any]], service: str, route: Route
) -> None:
    document = documents[service]
    operation = document["paths"].get(route.path, {}).get(route.method)
    assert operation is not None, f"{service} does not document {route.method} {route.path}"

    if route.body_fields:
        body = operation["requestBody"]
        assert body.get("required", False) is route.body_required
        schema = _resolve(document, body["content"]["application/json"]["schema"])
        assert route.body_fields <= set(schema["properties"]), schema
        assert schema.get("additionalProperties") is False, "unknown fields must be refused"
    else:
        assert "requestBody" not in operation

    success = operation["responses"][route.success]
    assert success["content"]["application/json"]["schema"], "the success reply has a schema"

    for status in ERROR_STATUSES:
        error = operation["responses"][status]
        assert set(error["content"]) == {PROBLEM_JSON}, (status, error)
        problem = _resolve(document, error["content"][PROBLEM_JSON]["schema"])
        assert {"title", "status", "detail"} <= set(problem["required"])
        assert {"type", "instance", "errors"} <= set(problem["properties"])
        assert error["description"]

    security = operation.get("security", [])
    assert (security == [{"HTTPBearer": []}]) is route.bearer, security


async def test_callback_documents_its_signature_header(
    documents: dict[str, dict[str, Any]],
) -> None:
    operation = documents["payment"]["paths"]["/payments/callbacks"]["post"]
    [header] = [p for p in operation["parameters"] if p["name"] == SIGNATURE_HEADER]
    assert header["in"] == "header"
    assert header["required"] is True
    assert "HMAC" in header["description"]


@pytest.mark.parametrize("service", SERVICES)
async def test_service_documents_no_route_another_service_owns(
    documents: dict[str, dict[str, Any]], service: str
) -> None:
    documented = {
        (method, path) for path, ops in documents[service]["paths"].items() for method in ops
    }
    for other, routes in OWNED_ROUTES.items():
        if other != service:
            for route in routes:
                assert (route.method, route.path) not in documented, (other, route)


@pytest.mark.parametrize("service", SERVICES)
async def test_health_answers_ok(stack: dict[str, Service], service: str) -> None:
    response = await stack[service].client.get("/health")
    assert response.status_code == 200
    assert response.json()["status"] == "ok"
    assert response.json()["service"] == service


@pytest.mark.parametrize("service", SERVICES)
async def test_metrics_answer_prometheus_text_for_each_consumer(
    stack: dict[str, Service], service: str
) -> None:
    client = stack[service].client

    async def consuming() -> bool:  # groups join after the port opens: lag needs partitions
        return (await client.get("/health/ready")).status_code == 200

    await eventually(consuming, timeout_s=30, what=f"{service} ready")
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    # In-process the four apps share the process's registry: each one's series carry its name.
    samples = [
        sample
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
        if sample.labels.get("service") == service
    ]
    backlog = [s for s in samples if s.name == "yellowcart_outbox_backlog"]
    assert [s.labels for s in backlog] == [{"service": service}]
    processed = [s for s in samples if s.name == "yellowcart_consumer_processed_total"]
    assert {s.labels["group"] for s in processed} == CONSUMER_GROUPS[service]
    assert all(s.value >= 0 for s in processed)
    published = [s for s in samples if s.name == "yellowcart_outbox_published_total"]
    assert [s.labels for s in published] == [{"service": service}]
    fired = [s for s in samples if s.name == "yellowcart_timers_fired_total"]
    assert len(fired) == (0 if service == "order" else 1)  # the order service has no timers
    lag = {s.labels["group"] for s in samples if s.name == "yellowcart_consumer_lag"}
    assert lag == CONSUMER_GROUPS[service]


def _named(schema: dict[str, Any]) -> bool:
    """A `$ref` to a named component, or a list of them (a list reply)."""
    if schema.get("type") == "array":
        return _named(schema.get("items", {}))
    return str(schema.get("$ref", "")).startswith("#/components/schemas/")


@pytest.mark.parametrize("service", SERVICES)
async def test_every_success_response_has_a_named_schema(
    documents: dict[str, dict[str, Any]], service: str
) -> None:
    document = documents[service]
    unnamed = []
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            for status, response in operation["responses"].items():
                if not status.startswith("2"):
                    continue
                for media, content in response.get("content", {}).items():
                    if not _named(content.get("schema", {})):
                        unnamed.append(f"{method.upper()} {path} {status} {media}")
                    else:
                        name = content["schema"].get("$ref") or content["schema"]["items"]["$ref"]
                        assert name.rsplit("/", 1)[-1] in document["components"]["schemas"]
    assert unnamed == []
