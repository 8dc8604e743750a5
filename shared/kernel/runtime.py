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
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Annotated, Any, TypeVar
from uuid import uuid4

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from faststream.kafka import KafkaBroker
from pydantic import BaseModel

from shared.kernel.clock import Clock, SystemClock
from shared.kernel.events.registry import EventRegistry
from shared.kernel.eventstore.port import DueTimer, EventStore
from shared.kernel.http import BodySizeLimit, install_problem_handlers
from shared.kernel.messaging import (
    BatchHandler,
    EventConsumer,
    EventHandler,
    RecordSender,
    as_sender,
    make_kafka_broker,
    subscribe_events,
)
from shared.kernel.outbox import OutboxRelay, republish
from shared.kernel.projection import Projection, Projector
from shared.kernel.readmodel.port import DocumentStore
from shared.kernel.settings import Settings
from shared.kernel.storage import open_document_store, open_event_store
from shared.kernel.timers import TimerScheduler

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


def process_owner(service: str, instance_id: str) -> str:
    if instance_id:
        return f"{service}@{instance_id}"
    return f"{service}@{socket.gethostname()}:{os.getpid()}:{uuid4().hex[:6]}"


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
        broker = make_kafka_broker(settings, log_level=logging.DEBUG)
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
        tasks = [asyncio.create_task(runtime.relay.run(settings.relay_interval_s, stop))]
        if wiring.on_timer is not None:
            runtime.scheduler = TimerScheduler(
                store, clock, wiring.on_timer, owner, lease_ttl=lease_ttl
            )
            tasks.append(
                asyncio.create_task(runtime.scheduler.run(settings.timer_interval_s, stop))
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
            await broker.stop()
            await documents.close()
            await store.close()

    app = FastAPI(title=spec.title, version="0.1.0", lifespan=lifespan, redirect_slashes=False)
    app.state.settings = settings
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
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
    """A service's answer to `GET /health` (503 with the same shape when it is unavailable)."""

    status: str
    service: str
    outbox_backlog: int | None = None
    error: str | None = None


METRICS_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "Prometheus text exposition format",
        "content": {"text/plain": {"schema": {"$ref": "#/components/schemas/PrometheusText"}}},
    }
}
PROMETHEUS_TEXT_SCHEMA = {"title": "PrometheusText", "type": "string"}


def _operations_router(service: str) -> APIRouter:
    router = APIRouter(tags=["operations"])

    @router.get(
        "/health",
        summary="liveness and readiness",
        response_model=Health,
        responses={503: {"model": Health, "description": "the store is unavailable"}},
    )
    async def health(runtime: RuntimeDep) -> JSONResponse:
        try:
            backlog = len(await runtime.store.unpublished(limit=1000))
        except Exception as error:  # a health probe reports, it does not crash
            body = Health(status="unavailable", service=service, error=str(error))
            return JSONResponse(body.model_dump(exclude_none=True), status_code=503)
        body = Health(status="ok", service=service, outbox_backlog=backlog)
        return JSONResponse(body.model_dump(exclude_none=True))

    @router.get(
        "/metrics",
        summary="Prometheus metrics",
        response_class=PlainTextResponse,
        responses=METRICS_RESPONSE,
    )
    async def metrics(runtime: RuntimeDep) -> PlainTextResponse:
        lines = []
        for consumer in runtime.consumers:
            labels = f'service="{service}",topic="{consumer.topic}"'
            for name, value in vars(consumer.metrics).items():
                lines.append(f"yellowcart_consumer_{name}_total{{{labels}}} {value}")
        for event_type, count in runtime.registry.unknown.items():
            lines.append(
                f'yellowcart_unknown_events_total{{service="{service}",type="{event_type}"}} '
                f"{count}"
            )
        labels = f'service="{service}"'
        for part, name in ((runtime.relay, "outbox"), (runtime.scheduler, "timers")):
            if part is not None:
                for counter, value in vars(part.metrics).items():
                    lines.append(f"yellowcart_{name}_{counter}_total{{{labels}}} {value}")
        backlog = len(await runtime.store.unpublished(limit=10_000))
        lines.append(f'yellowcart_outbox_backlog{{service="{service}"}} {backlog}')
        return PlainTextResponse("\n".join(lines) + "\n")

    return router
