"""Structured logs: every record of the process — ours, FastStream's, a handler's — comes out as
one JSON object per line with the service, the instance and the context bound around it; the
HTTP edge keeps or makes a request id and echoes it."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from aiokafka import ConsumerRecord
from fastapi import FastAPI

from shared.contracts.events import OrderShipped, default_registry
from shared.kernel.events.envelope import DomainEvent, Envelope
from shared.kernel.logs import RequestContext, bound_context, configure_logging
from shared.kernel.messaging.consumer import EventConsumer


@pytest.fixture
def json_logs(capsys: pytest.CaptureFixture[str]) -> Iterator[Any]:
    """Configure the pipeline as `serve` does, on the captured stderr; read its lines back."""
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    configure_logging("order", "order-1", "DEBUG", "json")

    def lines() -> list[dict[str, Any]]:
        return [json.loads(line) for line in capsys.readouterr().err.splitlines() if line]

    try:
        yield lines
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in saved[0]:
            root.addHandler(handler)
        root.setLevel(saved[1])


def test_every_library_logs_one_json_object_per_line_with_the_bound_context(
    json_logs: Any,
) -> None:
    with bound_context(correlation_id="ord-1", causation_id=None, event_id="e-1"):
        logging.getLogger("faststream").info("from FastStream's own logger")
        logging.getLogger("yellowcart.faststream").warning("assigned %s", "p0")
    logging.getLogger("services.order").info("outside any context")
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("shared.kernel.outbox").exception("relay failed")

    first, second, outside, failure = json_logs()
    assert first["event"] == "from FastStream's own logger"
    for line in (first, second):
        assert (line["service"], line["instance"]) == ("order", "order-1")
        assert (line["correlation_id"], line["event_id"]) == ("ord-1", "e-1")
        assert "causation_id" not in line  # None is left out, not written as null
    assert second["level"] == "warning" and second["event"] == "assigned p0"
    assert "correlation_id" not in outside and outside["logger"] == "services.order"
    assert failure["level"] == "error" and "ValueError: boom" in failure["exception"]
    assert all(line["timestamp"].endswith("Z") for line in (first, outside))


def shipped_record(order_id: str) -> ConsumerRecord[Any, Any]:
    envelope = Envelope.of(
        OrderShipped(order_id=order_id, seller_id="s-1", tracking_number="t"),
        stream_id=f"order-{order_id}",
        stream_version=3,
        occurred_at=datetime(2026, 3, 1, tzinfo=UTC),
        producer="order",
        correlation_id=order_id,
        causation_id="cause-1",
    )
    value = envelope.model_dump_json().encode()
    return ConsumerRecord("order.events", 0, 7, 0, 0, b"k", value, None, 0, len(value), [])


async def test_a_handler_logs_with_the_event_it_handles(json_logs: Any) -> None:
    async def handler(envelope: Envelope, event: DomainEvent) -> None:
        logging.getLogger("services.payment.handlers").info("opening the intent")

    class NoDeadLetters:
        async def send(self, *args: Any, **kwargs: Any) -> Any:
            raise AssertionError("nothing is dead-lettered here")

    consumer = EventConsumer(
        topic="order.events",
        handler=handler,
        registry=default_registry(),
        dead_letters=NoDeadLetters(),
        group_id="payment.reactions",
    )

    async def commit(offsets: Any) -> None:
        return None

    await consumer.process_batch([shipped_record("ord-9")], commit)

    lines = json_logs()
    (opening,) = [line for line in lines if line["event"] == "opening the intent"]
    assert opening["correlation_id"] == "ord-9"
    assert opening["causation_id"] == "cause-1"
    assert opening["event_type"] == "OrderShipped"
    assert opening["event_id"]
    handled = [line for line in lines if line["event"].startswith("handled OrderShipped")]
    assert handled and handled[0]["correlation_id"] == "ord-9"


async def test_a_request_keeps_the_callers_request_id_or_gets_one(json_logs: Any) -> None:
    app = FastAPI()

    @app.get("/ping")
    async def ping() -> dict[str, str]:
        logging.getLogger("services.order.api").info("pinged")
        return {"ok": "yes"}

    app.add_middleware(RequestContext)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        kept = await client.get("/ping", headers={"X-Request-ID": "req-42"})
        made = await client.get("/ping")
        refused = await client.get("/ping", headers={"X-Request-ID": "two words"})

    assert kept.headers["x-request-id"] == "req-42"
    assert len(made.headers["x-request-id"]) == 32
    assert refused.headers["x-request-id"] not in ("two words", made.headers["x-request-id"])
    pinged = [line for line in json_logs() if line["event"] == "pinged"]
    assert [line["request_id"] for line in pinged] == [
        "req-42",
        made.headers["x-request-id"],
        refused.headers["x-request-id"],
    ]
