"""What an operator sees of a running service: its `/metrics` scraped and parsed with
`prometheus_client`'s own text parser, and `/health/ready` following the broker.

All against the real local broker and real SQLite: a consumer held back by its handler (a
"paused" consumer) builds lag that the scrape shows per group and partition, and that falls
once it goes on; an outbox whose lease a stalled replica holds shows its backlog and a
growing age."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from operations.localbroker import LocalBroker, create_topics
from shared.contracts.events import TOPICS, OrderShipped, default_registry
from shared.kernel.events.envelope import DomainEvent, Envelope
from shared.kernel.messaging import make_producer
from shared.kernel.runtime import Runtime, ServiceSpec, Subscription, Wiring
from shared.kernel.storage import open_event_store
from tests.conftest import eventually
from tests.integration.conftest import (
    Service,
    Tokens,
    order_body,
    running_services,
    service_settings,
    uid,
)

pytestmark = pytest.mark.broker


async def scrape(service: Service) -> list[Sample]:
    response = await service.client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return [
        sample
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    ]


def values(samples: list[Sample], name: str, **labels: str) -> list[float]:
    return [
        s.value
        for s in samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    ]


async def test_a_scrape_shows_request_histograms_process_metrics_and_a_growing_outbox_age(
    kafka: LocalBroker, tmp_path: Path, tokens: Tokens
) -> None:
    # Another replica took the outbox lease for an hour and stalled (a paused process): this
    # service's relay, woken by its own commit, finds the lease taken and publishes nothing.
    settings = service_settings(kafka, tmp_path, outbox_stall_after_s=1)
    stalled = await open_event_store(settings.store_url_for("order"))
    try:
        held = await stalled.try_lease(
            "outbox", "stalled-replica", timedelta(hours=1), datetime.now(UTC)
        )
        assert held is not None
    finally:
        await stalled.close()
    async with running_services(settings, ["order"], consumers=False) as services:
        order = services["order"]
        # The registry is the process's: other tests' apps count there too, so deltas count.
        before = await scrape(order)
        placed = await order.client.post(
            "/orders", json=order_body(uid("shop")), headers=tokens.buyer(uid("buyer"))
        )
        assert placed.status_code == 201, placed.text
        missing = await order.client.get(f"/orders/{uid('ord')}", headers=tokens.operator())
        assert missing.status_code == 404

        first = await scrape(order)

        def added(name: str, **labels: str) -> float:
            return sum(values(first, name, **labels)) - sum(values(before, name, **labels))

        count = "yellowcart_http_request_duration_seconds_count"
        route = {"service": "order", "method": "POST", "route": "/orders"}
        assert added(count, **route, status="201") == 1
        # Route templates, not paths: the order id does not make a series of its own.
        by_id = {"service": "order", "method": "GET", "route": "/orders/{order_id}"}
        assert added(count, **by_id, status="404") == 1
        buckets = [s for s in first if s.name == "yellowcart_http_request_duration_seconds_bucket"]
        assert {s.labels["le"] for s in buckets} >= {"0.005", "0.1", "1.0", "+Inf"}
        assert values(first, "yellowcart_outbox_backlog", service="order") == [1.0]
        (age,) = values(first, "yellowcart_outbox_oldest_unpublished_age_seconds", service="order")
        assert 0 <= age < 30
        assert values(first, "process_resident_memory_bytes")[0] > 10_000_000
        assert values(first, "process_cpu_seconds_total")[0] > 0
        appends = "yellowcart_store_append_duration_seconds_count"
        assert added(appends, aggregate="Order", outcome="stored") == 1

        await asyncio.sleep(1.2)
        later = await scrape(order)
        (older,) = values(
            later, "yellowcart_outbox_oldest_unpublished_age_seconds", service="order"
        )
        assert older >= age + 1.0
        # The same stall is what readiness reports (the threshold here is one second).
        ready = await order.client.get("/health/ready")
        assert ready.status_code == 503
        assert ready.json()["checks"]["outbox"].startswith("stalled")
        assert (await order.client.get("/health/live")).status_code == 200


def shipped(order_id: str) -> bytes:
    envelope = Envelope.of(
        OrderShipped(order_id=order_id, seller_id="s-1", tracking_number="t-1"),
        stream_id=f"order-{order_id}",
        stream_version=2,
        occurred_at=datetime(2026, 3, 1, tzinfo=UTC),
        producer="order",
        correlation_id=order_id,
        causation_id=None,
    )
    return envelope.model_dump_json().encode()


class Gate:
    """A handler that waits until the test opens it: a consumer paused mid-batch."""

    def __init__(self) -> None:
        self.open = asyncio.Event()
        self.handled = 0

    async def handle(self, envelope: Envelope, event: DomainEvent) -> None:
        await self.open.wait()
        self.handled += 1


@pytest.fixture
async def gated(kafka: LocalBroker, tmp_path: Path) -> AsyncIterator[tuple[Service, Gate, str]]:
    """A service of one subscription (group `lagprobe.gated`) whose handler waits on a gate."""
    topic = uid("lag.events")
    await create_topics(kafka.bootstrap_servers, [topic])
    gate = Gate()

    def wire(runtime: Runtime) -> Wiring:
        return Wiring(context=None, subscriptions=[Subscription((topic,), "gated", gate.handle)])

    spec = ServiceSpec("lagprobe", "lag probe", [], default_registry, wire)
    try:
        async with running_services(service_settings(kafka, tmp_path), [spec]) as services:
            yield services["lagprobe"], gate, topic
    finally:
        gate.open.set()


async def test_consumer_lag_grows_while_the_consumer_is_paused_and_falls_after(
    kafka: LocalBroker, gated: tuple[Service, Gate, str]
) -> None:
    service, gate, topic = gated
    producer = make_producer(service.settings)
    await producer.start()
    try:

        async def publish(count: int) -> None:
            for _ in range(count):
                order_id = uid("ord")
                await producer.send_and_wait(topic, shipped(order_id), key=order_id.encode())

        def lag_of(samples: list[Sample]) -> dict[str, float]:
            return {
                s.labels["partition"]: s.value
                for s in samples
                if s.name == "yellowcart_consumer_lag"
                and s.labels["group"] == "lagprobe.gated"
                and s.labels["topic"] == topic
                and s.labels["service"] == "lagprobe"
            }

        async def total_lag(expected: float) -> bool:
            lag = lag_of(await scrape(service))
            return len(lag) == 4 and sum(lag.values()) == expected

        await publish(5)
        await eventually(lambda: total_lag(5), timeout_s=30, what="lag of 5 while paused")
        await publish(7)
        await eventually(lambda: total_lag(12), timeout_s=15, what="lag grew to 12")
        assert gate.handled == 0

        gate.open.set()
        await eventually(lambda: total_lag(0), timeout_s=15, what="lag back to 0")
        assert gate.handled == 12
        samples = await scrape(service)
        handled = values(
            samples,
            "yellowcart_handler_duration_seconds_count",
            topic=topic,
            group="lagprobe.gated",
            event_type="OrderShipped",
            outcome="processed",
        )
        assert handled == [12.0]
        processed = values(
            samples,
            "yellowcart_consumer_processed_total",
            service="lagprobe",
            group="lagprobe.gated",
        )
        assert processed == [12.0]
    finally:
        await producer.stop()


@pytest.mark.slow
async def test_readiness_follows_the_broker_within_seconds(tmp_path: Path) -> None:
    broker = await LocalBroker().start()
    await create_topics(broker.bootstrap_servers, TOPICS)
    settings = service_settings(broker, tmp_path, health_timeout_s=1.0)
    try:
        async with running_services(settings, ["order"]) as services:
            client = services["order"].client

            async def status() -> int:
                return (await client.get("/health/ready")).status_code

            await eventually(
                lambda: _is(status(), 200), timeout_s=30, what="ready once consumers joined"
            )
            body = (await client.get("/health/ready")).json()
            assert body["checks"] == {
                "store": "ok",
                "broker": "ok",
                "consumers": "ok",
                "outbox": "ok",
            }
            assert broker.pid is not None
            os.kill(broker.pid, signal.SIGSTOP)
            stopped = time.monotonic()
            await eventually(lambda: _is(status(), 503), timeout_s=10, what="not ready")
            assert time.monotonic() - stopped < 5
            body = (await client.get("/health/ready")).json()
            assert body["status"] == "not_ready" and body["checks"]["broker"] == "unreachable"
            assert (await client.get("/health/live")).status_code == 200

            os.kill(broker.pid, signal.SIGCONT)
            resumed = time.monotonic()
            await eventually(lambda: _is(status(), 200), timeout_s=30, what="ready again")
            assert time.monotonic() - resumed < 15
    finally:
        await broker.stop()


async def _is(answer: object, expected: int) -> bool:
    assert asyncio.iscoroutine(answer)
    return bool(await answer == expected)
