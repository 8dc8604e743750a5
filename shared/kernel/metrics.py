"""Prometheus metrics of a service process, with `prometheus_client`.

Every service runs as its own process with its own port (`yellowcart up` starts one process
per service, compose one container per service), so the process-wide default registry is the
right scope: it also carries `prometheus_client`'s process and platform collectors (CPU, RSS,
open files, GC). No multiprocess mode is needed, because no process forks workers that share a
port. Tests that run several service apps in one process share the registry; the `service`
and `group` labels keep their series apart.

Two kinds of metric:

- observed on the hot path (HTTP requests, handler calls, store appends): histograms updated
  where the work happens, one `labels(...).observe()` each (a dict lookup and a lock);
- read when scraped (outbox backlog and age, due timers, consumer lag, the components' plain
  counters): `ServiceCollector` reports what `refresh` gathered for the scrape just before, so
  nothing is polled between scrapes and the per-event path pays nothing for them.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from prometheus_client import REGISTRY, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from shared.kernel.eventstore.port import Backlog

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

HTTP_REQUEST_DURATION = Histogram(
    "yellowcart_http_request_duration_seconds",
    "HTTP requests by route template, method and response status",
    ["service", "method", "route", "status"],
    buckets=LATENCY_BUCKETS,
)
HANDLER_DURATION = Histogram(
    "yellowcart_handler_duration_seconds",
    "Consumer handler calls by topic, consumer group, event type and outcome "
    "(processed, duplicate, retried, dead_lettered; a projection's batch call: event_type=batch)",
    ["topic", "group", "event_type", "outcome"],
    buckets=LATENCY_BUCKETS,
)
EVENTS_CONSUMED = Counter(
    "yellowcart_consumed_events",
    "Events decoded by a consumer, by topic, consumer group and event type (projections too)",
    ["topic", "group", "event_type"],
)
STORE_APPEND_DURATION = Histogram(
    "yellowcart_store_append_duration_seconds",
    "Event store appends (one commit) by aggregate type and outcome",
    ["aggregate", "outcome"],
    buckets=LATENCY_BUCKETS,
)


@dataclass
class Scrape:
    """What one service's last `refresh` read: store backlog and consumer lag."""

    at: datetime | None = None
    backlog: Backlog | None = None
    lag: dict[tuple[str, str, int], int] = field(default_factory=dict)  # (group, topic, p)
    dead_letters: dict[tuple[str, str], int] = field(default_factory=dict)  # (dlq topic, group)


CounterSource = Callable[[], Iterable[tuple[str, str, Mapping[str, str], float]]]


@dataclass
class ServiceMetrics:
    """One service's scrape-time metrics: its last `Scrape` and where its counters are read."""

    service: str
    counters: CounterSource
    scrape: Scrape = field(default_factory=Scrape)


class ServiceCollector(Collector):
    """Yields every registered service's scrape-time metrics (one collector per process)."""

    def __init__(self) -> None:
        self._services: dict[int, ServiceMetrics] = {}
        self._lock = threading.Lock()

    def add(self, metrics: ServiceMetrics) -> None:
        with self._lock:
            self._services[id(metrics)] = metrics

    def remove(self, metrics: ServiceMetrics) -> None:
        with self._lock:
            self._services.pop(id(metrics), None)

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            services = list(self._services.values())
        yield from _scrape_families(services)
        counters: dict[str, CounterMetricFamily] = {}
        for metrics in services:
            for name, help_text, labels, value in metrics.counters():
                family = counters.get(name)
                if family is None:
                    family = CounterMetricFamily(name, help_text, labels=list(labels))
                    counters[name] = family
                family.add_metric(list(labels.values()), value)
        yield from counters.values()


def _scrape_families(services: list[ServiceMetrics]) -> Iterator[Metric]:
    unpublished = GaugeMetricFamily(
        "yellowcart_outbox_backlog",
        "Commits not yet acknowledged by the broker (all of them, uncapped)",
        labels=["service"],
    )
    age = GaugeMetricFamily(
        "yellowcart_outbox_oldest_unpublished_age_seconds",
        "Age of the oldest commit not yet acknowledged by the broker (0 when none)",
        labels=["service"],
    )
    due = GaugeMetricFamily(
        "yellowcart_timers_due", "Timers due now and not yet completed", labels=["service"]
    )
    overdue = GaugeMetricFamily(
        "yellowcart_timers_overdue",
        "Timers due longer ago than YELLOWCART_TIMER_OVERDUE_AFTER_S and not yet completed",
        labels=["service"],
    )
    lag = GaugeMetricFamily(
        "yellowcart_consumer_lag",
        "Records of a partition after the consumer group's committed offset",
        labels=["service", "group", "topic", "partition"],
    )
    waiting = GaugeMetricFamily(
        "yellowcart_dead_letters_waiting",
        "Dead letters of this service's consumer groups neither redriven nor purged, "
        "by dead-letter topic and group",
        labels=["service", "topic", "group"],
    )
    for metrics in services:
        scrape = metrics.scrape
        for (topic, group), letters in sorted(scrape.dead_letters.items()):
            waiting.add_metric([metrics.service, topic, group], letters)
        if scrape.backlog is not None and scrape.at is not None:
            backlog = scrape.backlog
            oldest = backlog.oldest_unpublished_at
            seconds = max(0.0, (scrape.at - oldest).total_seconds()) if oldest else 0.0
            unpublished.add_metric([metrics.service], backlog.unpublished)
            age.add_metric([metrics.service], seconds)
            due.add_metric([metrics.service], backlog.timers_due)
            overdue.add_metric([metrics.service], backlog.timers_overdue)
        for (group, topic, partition), records in sorted(scrape.lag.items()):
            lag.add_metric([metrics.service, group, topic, str(partition)], records)
    yield from (unpublished, age, due, overdue, lag, waiting)


_collector: ServiceCollector | None = None
_collector_lock = threading.Lock()


def service_collector() -> ServiceCollector:
    """The process's one `ServiceCollector`, registered in the default registry on first use."""
    global _collector
    with _collector_lock:
        if _collector is None:
            _collector = ServiceCollector()
            REGISTRY.register(_collector)
        return _collector


class RequestDuration:
    """ASGI middleware observing `yellowcart_http_request_duration_seconds`.

    Labelled by the route's template (`/orders/{order_id}`, as Starlette's router leaves it in
    the scope), never the raw path, so an id does not make a series; an unmatched path is
    `unmatched`. A pure ASGI class rather than `BaseHTTPMiddleware`: no extra task per request.
    """

    def __init__(self, app: Any, service: str) -> None:
        self.app = app
        self.service = service
        self._children: dict[tuple[str, str, int], Histogram] = {}  # `labels()` looked up once

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_observed(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_observed)
        finally:
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            key = (scope["method"], route, status)
            child = self._children.get(key)
            if child is None:
                child = self._children[key] = HTTP_REQUEST_DURATION.labels(
                    self.service, scope["method"], route, str(status)
                )
            child.observe(time.perf_counter() - started)
