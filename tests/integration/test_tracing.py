"""One `POST /orders` is one trace, from the HTTP request through the order commit, the relay's
publish, the payment service's consume and commit, to the order view — in process, over the
real local broker, with spans collected by the SDK's in-memory exporter."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from operations.localbroker import LocalBroker
from shared.contracts.events import ORDER_TOPIC, PAYMENT_TOPIC
from shared.kernel.tracing import install_tracing
from tests.conftest import eventually
from tests.integration.conftest import (
    Tokens,
    order_body,
    running_services,
    service_settings,
    uid,
)

pytestmark = pytest.mark.broker


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    install_tracing(provider)
    try:
        yield exporter
    finally:
        install_tracing(None)
        provider.shutdown()


def one(spans: list[ReadableSpan], name: str, **attributes: str) -> ReadableSpan:
    found = [
        s
        for s in spans
        if s.name == name and all((s.attributes or {}).get(k) == v for k, v in attributes.items())
    ]
    assert len(found) == 1, (name, attributes, [s.name for s in spans])
    return found[0]


def parent_id(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


async def test_one_post_orders_is_one_trace_from_the_request_to_the_view(
    spans: InMemorySpanExporter, kafka: LocalBroker, tmp_path: Path, tokens: Tokens
) -> None:
    settings = service_settings(kafka, tmp_path)
    async with running_services(settings, ["order", "payment"]) as services:
        order, payment = services["order"], services["payment"]
        buyer = tokens.buyer(uid("buyer"))
        placed = await order.client.post("/orders", json=order_body(uid("shop")), headers=buyer)
        assert placed.status_code == 201, placed.text
        order_id = placed.json()["order_id"]

        async def visible() -> bool:
            view = await order.client.get(f"/orders/{order_id}", headers=buyer)
            intent = await payment.client.get(f"/payments/{order_id}", headers=buyer)
            return view.status_code == 200 and intent.status_code == 200

        await eventually(visible, timeout_s=30, what="the view and the payment intent")

        def traced() -> list[ReadableSpan]:
            request = one(list(spans.get_finished_spans()), "POST /orders")
            trace_id = request.context.trace_id
            return [s for s in spans.get_finished_spans() if s.context.trace_id == trace_id]

        names_needed = {
            "store append Order",
            f"{ORDER_TOPIC} publish",
            f"{ORDER_TOPIC} process",
            "store append PaymentIntent",
            f"{PAYMENT_TOPIC} publish",
            "projection update order.view",
        }
        await eventually(
            lambda: names_needed <= {s.name for s in traced()}, timeout_s=15, what="every span"
        )

    trace = traced()
    request = one(trace, "POST /orders")
    order_commit = one(trace, "store append Order")
    publish = one(trace, f"{ORDER_TOPIC} publish")
    consumed = one(trace, f"{ORDER_TOPIC} process", group="payment.reactions")
    payment_commit = one(trace, "store append PaymentIntent")
    # The chain, link by link: the commit inside the request, the relay's publish (another
    # task, later) continuing the commit's stored context, the payment consumer under the
    # publish through the `traceparent` header, the payment commit inside its handler.
    assert parent_id(order_commit) is not None  # under the request's own spans
    assert order_commit.context.trace_id == request.context.trace_id
    assert parent_id(publish) == order_commit.context.span_id
    assert parent_id(consumed) == publish.context.span_id
    assert parent_id(payment_commit) == consumed.context.span_id
    views = [s for s in trace if s.name == "projection update order.view"]
    assert publish.context.span_id in {parent_id(s) for s in views}
    assert all(s.context.trace_id == request.context.trace_id for s in trace)
