"""What every service process runs: HTTP edge, Kafka consumers, outbox relay, timer scheduler.

A service describes itself with a `ServiceSpec`, built by its composition root: its routers,
the event registry it reads with, and a `wire` function that builds its context from the live
resources. `create_service_app` turns that into a FastAPI app whose lifespan opens the
service's own database, subscribes its consumers, and runs the relay and the scheduler until
shutdown. The kernel knows no service, no event and no policy: all of it comes in through the
spec. Nothing here runs at import time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from typing import Annotated, Any, TypeVar
from uuid import uuid4

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from faststream.kafka import KafkaBroker
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from pydantic import BaseModel

from shared.kernel.checkpoints import private_key_from_pem
from shared.kernel.clock import Clock, SystemClock
from shared.kernel.deadletter_depth import DeadLetterDepth
from shared.kernel.events.registry import EventRegistry
from shared.kernel.eventstore.port import Backlog, DueTimer, EventStore
from shared.kernel.http import BodySizeLimit, install_problem_handlers
from shared.kernel.logs import RequestContext, configure_logging
from shared.kernel.messaging import (
    BatchHandler,
    EventConsumer,
    EventHandler,
    RecordSender,
    as_sender,
    consumer_lag,
    dlq_topic,
    make_kafka_broker,
    subscribe_events,
)
from shared.kernel.metrics import RequestDuration, Scrape, ServiceMetrics, service_collector
from shared.kernel.outbox import OutboxRelay, republish
from shared.kernel.projection import Projection, Projector
from shared.kernel.readmodel.port import DocumentStore
from shared.kernel.sealing import CheckpointEvent, CheckpointSealer
from shared.kernel.settings import Settings
from shared.kernel.storage import open_document_store, open_event_store
from shared.kernel.timers import TimerScheduler
from shared.kernel.tracing import configure_tracing, instrument_app

log = logging.getLogger(__name__)
TimerHandler = Callable[[DueTimer], Awaitable[None]]
C = TypeVar("C")


@dataclass(frozen=True)
class Subscription:
    """Consume `topics` in the consumer group `<service>.<purpose>` (one consumer, one join);
    `batch`, if given, takes each batch of events at once (see `subscribe_events`)."""

    topics: tuple[str, ...]
    purpose: str
    handler: EventHandler
    batch: BatchHandler | None = None

    @classmethod
    def projection(
        cls,
        topics: Sequence[str],
        purpose: str,
        documents: DocumentStore,
        projection: Projection,
    ) -> Subscription:
        """Keep `projection` in `documents` from `topics`, a batch's events folded together."""
        projector = Projector(documents, projection)
        return cls(tuple(topics), purpose, projector.one, projector.many)


@dataclass
class Wiring:
    """What a composition root hands back: the context routes use, subscriptions, timers."""

    context: Any
    subscriptions: Sequence[Subscription] = ()
    on_timer: TimerHandler | None = None


@dataclass
class Runtime:
    """The live resources of one service process, given to its composition root."""

    name: str
    settings: Settings
    clock: Clock
    store: EventStore
    documents: DocumentStore
    registry: EventRegistry
    consumers: list[EventConsumer] = field(default_factory=list)
    relay: OutboxRelay | None = None
    scheduler: TimerScheduler | None = None
    sealer: CheckpointSealer | None = None
    dead_letters: DeadLetterDepth | None = None  # read at scrape time
    broker: KafkaBroker | None = None
    metrics: ServiceMetrics | None = None
    consuming: bool = False  # every consumer group joined (they join after the port opens)
    republishing: bool = False  # re-sending the store to a fresh broker, in the background

    @property
    def paused_on_store(self) -> bool:
        """Some consumer is paused on a record because the store is unavailable (readiness)."""
        return any(consumer.waiting_for_store for consumer in self.consumers)


async def _start_consuming(broker: KafkaBroker, runtime: Runtime, service: str) -> None:
    """Start every subscriber at once (FastStream's `start` starts them one after another,
    each waiting for its group join). One that cannot start (the broker went away meanwhile)
    is tried again with backoff; `runtime.consuming` says when all of them run."""
    started = time.monotonic()
    pending, failures = list(broker.subscribers), 0
    while pending:
        results = await asyncio.gather(
            *(subscriber.start() for subscriber in pending), return_exceptions=True
        )
        errors = [result for result in results if isinstance(result, Exception)]
        pending = [s for s, r in zip(pending, results, strict=True) if isinstance(r, Exception)]
        if pending:
            failures += 1
            delay = min(0.5 * 2**failures, 10.0)
            log.error(
                "%s: %d consumer(s) could not start (%r); again in %.1f s",
                service,
                len(pending),
                errors[0],
                delay,
            )
            await asyncio.sleep(delay)
    for publisher in broker.publishers:
        await publisher.start()
    broker.running = True
    runtime.consuming = True
    log.info("%s consuming after %.2f s", service, time.monotonic() - started)


async def _republish_while_serving(runtime: Runtime, sender: RecordSender) -> None:
    """Re-emit every stored commit (the broker lost them all), 500 at a time, each batch
    acknowledged before the next; consumers deduplicate what they had already handled."""
    store, service = runtime.store, runtime.name
    started = time.monotonic()
    delay = 0.5
    runtime.republishing = True
    while True:
        try:
            count = await republish(store, sender)
        except Exception:
            log.exception("%s: re-sending the store failed; again in %.1f s", service, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)
            continue
        runtime.republishing = False
        log.info(
            "%s republished %d events to a fresh broker in %.1f s",
            service,
            count,
            time.monotonic() - started,
        )
        return


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    title: str
    routers: Sequence[APIRouter]
    registry: Callable[[], EventRegistry]
    wire: Callable[[Runtime], Wiring]
    checkpoint_event: CheckpointEvent | None = None  # the event a sealed checkpoint travels in


def process_owner(service: str, instance_id: str) -> str:
    if instance_id:
        return f"{service}@{instance_id}"
    return f"{service}@{socket.gethostname()}:{os.getpid()}:{uuid4().hex[:6]}"


def configure_service_process(service: str, settings: Settings) -> None:
    """What a service process sets up once for itself: structured logs named by its service
    and instance, and trace export when an OTLP endpoint is set."""
    instance = settings.instance_id or f"{socket.gethostname()}:{os.getpid()}"
    configure_logging(service, instance, settings.log_level, settings.log_format)
    configure_tracing(service, settings.otlp_endpoint)


def create_service_app(
    spec: ServiceSpec,
    settings: Settings,
    clock: Clock | None = None,
    *,
    republish_on_start: bool = False,
) -> FastAPI:
    clock = clock or SystemClock()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        opening = time.monotonic()
        url = settings.store_url_for(spec.name)
        store = await open_event_store(url)
        documents = await open_document_store(url)
        runtime = Runtime(spec.name, settings, clock, store, documents, spec.registry())
        wiring = spec.wire(runtime)
        # FastStream's own loggers write coloured text to stdout; this one propagates to the
        # root handler, the process's one log pipeline (`shared.kernel.logs`).
        broker = make_kafka_broker(
            settings, logger=logging.getLogger("yellowcart.faststream"), log_level=logging.DEBUG
        )
        for subscription in wiring.subscriptions:
            runtime.consumers.append(
                subscribe_events(
                    broker,
                    subscription.topics,
                    group_id=f"{spec.name}.{subscription.purpose}",
                    handler=subscription.handler,
                    batch_handler=subscription.batch,
                    registry=runtime.registry,
                    clock=clock,
                    session_timeout_ms=settings.consumer_session_timeout_ms,
                    heartbeat_interval_ms=settings.consumer_session_timeout_ms // 5,
                    fetch_max_wait_ms=settings.consumer_fetch_wait_ms,
                )
            )
        runtime.broker = broker
        if wiring.subscriptions:
            runtime.dead_letters = DeadLetterDepth(
                settings,
                [dlq_topic(t) for s in wiring.subscriptions for t in s.topics],
                [consumer.group_id for consumer in runtime.consumers],
            )
        runtime.metrics = ServiceMetrics(spec.name, partial(_counters, runtime))
        service_collector().add(runtime.metrics)
        owner = process_owner(spec.name, settings.instance_id)
        stop = asyncio.Event()
        await broker.connect()  # the producer: commands and the relay need only this
        sender = as_sender(broker)
        # Serve at once: consumer groups join in the background, all at the same time, and
        # a re-send after a broker loss runs in bounded batches while the service serves.
        background = [asyncio.create_task(_start_consuming(broker, runtime, spec.name))]
        if republish_on_start:
            background.append(asyncio.create_task(_republish_while_serving(runtime, sender)))
        lease_ttl = timedelta(seconds=settings.lease_ttl_s)
        runtime.relay = OutboxRelay(store, sender, clock, owner, lease_ttl=lease_ttl)
        store.on_append(runtime.relay.wake)
        tasks = [
            asyncio.create_task(
                runtime.relay.run(settings.relay_interval_s, stop, settings.relay_linger_s)
            )
        ]
        if wiring.on_timer is not None:
            runtime.scheduler = TimerScheduler(
                store, clock, wiring.on_timer, owner, lease_ttl=lease_ttl
            )
            tasks.append(
                asyncio.create_task(runtime.scheduler.run(settings.timer_interval_s, stop))
            )
        if settings.checkpoint_interval_s > 0 and spec.checkpoint_event is not None:
            runtime.sealer = CheckpointSealer(
                store,
                sender,
                clock,
                private_key_from_pem(settings.checkpoint_key.encode()),
                service=spec.name,
                owner=owner,
                event_of=spec.checkpoint_event,
                interval=timedelta(seconds=settings.checkpoint_interval_s),
            )
            tasks.append(
                asyncio.create_task(runtime.sealer.run(settings.checkpoint_interval_s, stop))
            )
        app.state.runtime = runtime
        app.state.context = wiring.context
        log.info(
            "%s serving %.2f s after its lifespan began", spec.name, time.monotonic() - opening
        )
        try:
            yield
        finally:
            stop.set()
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await asyncio.wait_for(task, timeout=5)
            service_collector().remove(runtime.metrics)
            if runtime.dead_letters is not None:
                with contextlib.suppress(Exception):
                    await runtime.dead_letters.close()
            await broker.stop()
            await documents.close()
            await store.close()

    app = FastAPI(title=spec.title, version="0.1.0", lifespan=lifespan, redirect_slashes=False)
    app.state.settings = settings
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(RequestDuration, service=spec.name)
    app.add_middleware(RequestContext)
    instrument_app(app)
    install_problem_handlers(app)
    for router in spec.routers:
        app.include_router(router)
    app.include_router(_operations_router(spec.name))
    _name_the_text_schema(app)
    return app


def _name_the_text_schema(app: FastAPI) -> None:
    """`/metrics` answers text: its schema is a named component like every JSON body's."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        document = generate()
        schemas = document.setdefault("components", {}).setdefault("schemas", {})
        schemas.setdefault("PrometheusText", PROMETHEUS_TEXT_SCHEMA)
        return document

    app.openapi = openapi  # type: ignore[method-assign]


def context_of(context_type: type[C]) -> Callable[[Request], Awaitable[C]]:
    """A FastAPI dependency handing a route its service's context (built by `wire`).

    Async although it awaits nothing: FastAPI runs a plain function dependency in a worker
    thread, a thread hop on every request for a field lookup."""

    async def dependency(request: Request) -> C:
        context = request.app.state.context
        if not isinstance(context, context_type):
            raise TypeError(f"this app's context is not a {context_type.__name__}")
        return context

    return dependency


async def runtime_of(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(runtime_of)]


class Health(BaseModel):
    """A service's answer to `GET /health`, `/health/live` and `/health/ready` (503 with the
    same shape when it is not ready). `checks` names each readiness condition and its state."""

    status: str
    service: str
    outbox_backlog: int | None = None
    outbox_oldest_age_s: float | None = None
    checks: dict[str, str] | None = None
    error: str | None = None


METRICS_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "Prometheus text exposition format",
        "content": {"text/plain": {"schema": {"$ref": "#/components/schemas/PrometheusText"}}},
    }
}
PROMETHEUS_TEXT_SCHEMA = {"title": "PrometheusText", "type": "string"}
OK = "ok"


def _counters(runtime: Runtime) -> Iterator[tuple[str, str, dict[str, str], float]]:
    """The components' plain counters, as (name, help, labels, value) for the collector."""
    service = runtime.name
    for consumer in runtime.consumers:
        labels = {"service": service, "group": consumer.group_id}
        for counter, value in vars(consumer.metrics).items():
            yield f"yellowcart_consumer_{counter}", f"consumer {counter}", labels, value
    for event_type, count in runtime.registry.unknown.items():
        labels = {"service": service, "type": event_type}
        yield (
            "yellowcart_unknown_events",
            "events of a type this service does not know",
            labels,
            count,
        )
    parts = (
        (runtime.relay, "outbox"),
        (runtime.scheduler, "timers"),
        (runtime.sealer, "checkpoints"),
    )
    for part, name in parts:
        if part is not None:
            for counter, value in vars(part.metrics).items():
                yield (
                    f"yellowcart_{name}_{counter}",
                    f"{name} {counter}",
                    {"service": service},
                    value,
                )


async def _backlog(runtime: Runtime, now: datetime) -> Backlog:
    overdue_after = timedelta(seconds=runtime.settings.timer_overdue_after_s)
    return await asyncio.wait_for(
        runtime.store.backlog(now, overdue_after), runtime.settings.health_timeout_s
    )


async def _lag(runtime: Runtime) -> dict[tuple[str, str, int], int]:
    lag: dict[tuple[str, str, int], int] = {}
    for consumer in runtime.consumers:
        try:
            partitions = await asyncio.wait_for(
                consumer_lag(consumer), runtime.settings.health_timeout_s
            )
        except Exception:  # a scrape reports what it can; the broker may be away
            log.warning("consumer lag of %s unavailable", consumer.group_id, exc_info=True)
            continue
        for tp, records in partitions.items():
            lag[(consumer.group_id, tp.topic, tp.partition)] = records
    return lag


async def refresh_metrics(runtime: Runtime) -> None:
    """Read what `/metrics` reports at scrape time: store backlog, due timers, consumer lag."""
    if runtime.metrics is None:
        return
    now = runtime.clock.now()
    backlog: Backlog | None = None
    try:
        backlog = await _backlog(runtime, now)
    except Exception:
        log.warning("store backlog unavailable for /metrics", exc_info=True)
    runtime.metrics.scrape = Scrape(
        at=now, backlog=backlog, lag=await _lag(runtime), dead_letters=await _dead_letters(runtime)
    )


async def _dead_letters(runtime: Runtime) -> dict[tuple[str, str], int]:
    depth = runtime.dead_letters
    if depth is None:
        return {}
    timeout = runtime.settings.health_timeout_s
    try:
        return await asyncio.wait_for(depth.refresh(timeout), timeout)
    except Exception:  # the broker may be away, or the principal may not read the DLQs
        log.warning("dead-letter depth unavailable; reporting the last read", exc_info=True)
        return depth.waiting()


async def readiness(runtime: Runtime) -> Health:
    """Ready = store answers, broker answers, every consumer has partitions, outbox not stalled."""
    settings = runtime.settings
    now = runtime.clock.now()
    checks: dict[str, str] = {}

    async def store_check() -> Backlog | None:
        try:
            backlog = await _backlog(runtime, now)
        except Exception as error:
            checks["store"] = f"unavailable: {type(error).__name__}: {error}"[:300]
            return None
        checks["store"] = OK
        return backlog

    async def broker_check() -> None:
        answered = runtime.broker is not None and await runtime.broker.ping(
            settings.health_timeout_s
        )
        checks["broker"] = OK if answered else "unreachable"

    backlog, _ = await asyncio.gather(store_check(), broker_check())
    if checks["store"] == OK and runtime.paused_on_store:
        # reads still answer (WAL, a replica) while writes fail: a disk full, a lock held
        checks["store"] = "refusing writes: a consumer is paused on its record until it accepts"
    waiting = [
        consumer.group_id
        for consumer in runtime.consumers
        if not ((client := consumer.kafka_client()) and client.assignment())
    ]
    checks["consumers"] = OK if not waiting else "no partitions assigned: " + ", ".join(waiting)
    age: float | None = None
    if backlog is not None:
        oldest = backlog.oldest_unpublished_at
        age = max(0.0, (now - oldest).total_seconds()) if oldest else 0.0
        stalled = age > settings.outbox_stall_after_s
        checks["outbox"] = (
            f"stalled: oldest unpublished commit is {age:.0f} s old" if stalled else OK
        )
    ready = all(state == OK for state in checks.values())
    return Health(
        status="ready" if ready else "not_ready",
        service=runtime.name,
        outbox_backlog=backlog.unpublished if backlog else None,
        outbox_oldest_age_s=age,
        checks=checks,
    )


def _operations_router(service: str) -> APIRouter:
    router = APIRouter(tags=["operations"])

    @router.get(
        "/health",
        summary="the store answers (kept for existing callers; see /health/ready)",
        response_model=Health,
        responses={503: {"model": Health, "description": "the store is unavailable"}},
    )
    async def health(runtime: RuntimeDep) -> JSONResponse:
        try:
            backlog = await _backlog(runtime, runtime.clock.now())
        except Exception as error:  # a health probe reports, it does not crash
            body = Health(status="unavailable", service=service, error=str(error))
            return JSONResponse(body.model_dump(exclude_none=True), status_code=503)
        body = Health(status="ok", service=service, outbox_backlog=backlog.unpublished)
        return JSONResponse(body.model_dump(exclude_none=True))

    @router.get("/health/live", summary="liveness: the process runs", response_model=Health)
    async def live() -> Health:
        return Health(status="ok", service=service)

    @router.get(
        "/health/ready",
        summary="readiness: store and broker answer, consumers assigned, outbox not stalled",
        response_model=Health,
        responses={503: {"model": Health, "description": "not ready; `checks` says why"}},
    )
    async def ready(runtime: RuntimeDep) -> JSONResponse:
        body = await readiness(runtime)
        code = 200 if body.status == "ready" else 503
        return JSONResponse(body.model_dump(exclude_none=True), status_code=code)

    @router.get(
        "/metrics",
        summary="Prometheus metrics",
        response_class=Response,
        responses=METRICS_RESPONSE,
    )
    async def metrics(runtime: RuntimeDep) -> Response:
        await refresh_metrics(runtime)
        return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)

    return router
