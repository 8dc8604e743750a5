"""Load, decide, save: the one shape every use case takes.

`Repository` turns an aggregate's recorded events into one commit (events, timers, causation
key, outbox flag) and rebuilds aggregates from their streams. Every event of one commit carries
the one instant of the command or reaction that recorded it (`at`), so what a caller is told
and what other services read are the same moment to the microsecond.

`handle_event` is the idempotent consumer step: the commit carries the cause it answers and the
name of the handler that answered it, (handler, cause) is unique in the store, so a repeat is
refused and counted as done, while a second reaction to the same message in the same service
is not mistaken for a repeat. A lost race reloads and decides again.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Generic, TypeVar

from prometheus_client import Histogram

from shared.kernel.aggregate import Aggregate
from shared.kernel.events.envelope import DomainEvent, Envelope
from shared.kernel.events.registry import EventRegistry
from shared.kernel.eventstore.port import (
    Commit,
    ConcurrencyConflict,
    DueTimer,
    DuplicateCausation,
    EventStore,
    Fence,
    NewCommit,
    NewTimer,
    StreamNotFound,
)
from shared.kernel.metrics import STORE_APPEND_DURATION
from shared.kernel.tracing import current_traceparent, span

A = TypeVar("A", bound=Aggregate)
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Cause:
    """What a reaction answers, who answers it, and when.

    `handler` names the reaction (`payment.open_intent`); (`handler`, `causation_id`) is the
    de-duplication key. `what` only serves the logs (an event type or a timer name).
    """

    handler: str
    causation_id: str
    correlation_id: str
    at: datetime
    what: str
    fence: Fence | None = None  # a fired timer's lease: its effect is stored only under it

    @classmethod
    def event(cls, handler: str, envelope: Envelope, at: datetime) -> Cause:
        return cls(handler, envelope.event_id, envelope.correlation_id, at, envelope.event_type)

    @classmethod
    def timer(cls, handler: str, timer: DueTimer, correlation_id: str, at: datetime) -> Cause:
        return cls(handler, timer.timer_id, correlation_id, at, timer.name, timer.fence)


class Repository(Generic[A]):
    """Loads and saves one aggregate type.

    With `cache_size`, the aggregates it last saved stay in memory (least recently used ones
    leave first) and a later `get` reads only the events stored after them, so handling one
    more event costs the same however long the stream is: what a live-stream shop's seller
    record needs, which every order of a sale extends. The cache is only a starting point: the
    store is always asked for newer events (another replica may have appended), an aggregate is
    handed to one caller at a time (taken out on `get`, put back by a successful `save`), and
    one whose save failed is forgotten.
    """

    def __init__(
        self,
        store: EventStore,
        aggregate_type: type[A],
        registry: EventRegistry,
        producer: str,
        *,
        cache_size: int = 0,
    ) -> None:
        self.store = store
        self.aggregate_type = aggregate_type
        self.registry = registry
        self.producer = producer
        self._cache_size = cache_size
        self._cache: OrderedDict[str, A] = OrderedDict()
        self._append_durations: dict[str, Histogram] = {}  # metric children by outcome

    async def events_of(
        self, aggregate_id: str, after_version: int = 0
    ) -> list[DomainEvent] | None:
        """The aggregate's events after `after_version`, in order (upcast), or None when its
        stream does not exist."""
        stream_id = self.aggregate_type.stream_id_for(aggregate_id)
        try:
            envelopes = await self.store.load_stream(stream_id, after_version)
        except StreamNotFound:
            return None
        events = [self.registry.decode(envelope) for envelope in envelopes]
        return [event for event in events if event is not None]

    async def get(self, aggregate_id: str) -> A | None:
        cached = self._cache.pop(self.aggregate_type.stream_id_for(aggregate_id), None)
        if cached is not None:
            for event in await self.events_of(aggregate_id, cached.version) or ():
                cached.apply(event)
                cached.version += 1
            return cached
        events = await self.events_of(aggregate_id)
        return None if events is None else self.aggregate_type.replay(aggregate_id, events)

    def _keep(self, aggregate: A) -> None:
        if self._cache_size > 0 and not aggregate.pending:
            self._cache[aggregate.stream_id] = aggregate
            self._cache.move_to_end(aggregate.stream_id)
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)

    async def save(
        self,
        aggregate: A,
        *,
        at: datetime,
        correlation_id: str,
        causation_id: str | None = None,
        handler: str = "",
        fence: Fence | None = None,
    ) -> Commit | None:
        """Store what the aggregate recorded as one commit, every event stamped `at`; None when
        it recorded nothing."""
        if not aggregate.pending:
            self._keep(aggregate)
            return None
        envelopes = [
            Envelope.of(
                event,
                stream_id=aggregate.stream_id,
                stream_version=aggregate.version + index,
                occurred_at=at,
                producer=self.producer,
                correlation_id=correlation_id,
                causation_id=causation_id,
            )
            for index, event in enumerate(aggregate.pending, start=1)
        ]
        timers = [
            NewTimer(
                timer_id=f"{aggregate.stream_id}:{timer.name}:{aggregate.version + 1}:{index}",
                name=timer.name,
                due_at=timer.due_at,
                data={"aggregate_id": aggregate.id, **timer.data},
            )
            for index, timer in enumerate(aggregate.pending_timers)
        ]
        first = aggregate.pending[0]
        name = self.aggregate_type.__name__
        started = time.perf_counter()
        outcome = "failed"
        try:
            with span(f"store append {name}", attributes={"stream_id": aggregate.stream_id}):
                commit = await self.store.append(
                    NewCommit(
                        stream_id=aggregate.stream_id,
                        expected_version=aggregate.version,
                        events=envelopes,
                        topic=first.topic,
                        partition_key=first.partition_key(),
                        causation_id=causation_id,
                        timers=timers,
                        handler=handler,
                        trace_context=current_traceparent(),
                        fence=fence,
                    )
                )
            outcome = "stored"
        except (ConcurrencyConflict, DuplicateCausation) as refused:
            outcome = "conflict" if isinstance(refused, ConcurrencyConflict) else "duplicate"
            raise
        finally:
            child = self._append_durations.get(outcome)
            if child is None:  # `labels()` costs microseconds: each series is looked up once
                child = self._append_durations[outcome] = STORE_APPEND_DURATION.labels(
                    name, outcome
                )
            child.observe(time.perf_counter() - started)
        aggregate.version += len(aggregate.pending)
        aggregate.pending.clear()
        aggregate.pending_timers.clear()
        self._keep(aggregate)
        return commit


async def handle_event(
    repository: Repository[A],
    aggregate_id: str,
    decide: Callable[[A | None], A | None],
    cause: Cause,
    *,
    attempts: int = 5,
) -> Commit | None:
    """React to an event (or a fired timer) exactly once in effect.

    `decide` gets the current aggregate (None if it does not exist yet) and returns the
    aggregate with recorded events, or None to do nothing. A cause this handler already
    answered is a no-op; a concurrency conflict reloads and decides again.
    """
    for _ in range(attempts):
        aggregate = decide(await repository.get(aggregate_id))
        if aggregate is None:
            return None
        try:
            return await repository.save(
                aggregate,
                at=cause.at,
                correlation_id=cause.correlation_id,
                causation_id=cause.causation_id,
                handler=cause.handler,
                fence=cause.fence,
            )
        except DuplicateCausation:
            log.info("%s already handled %s", cause.handler, cause.causation_id)
            return None
        except ConcurrencyConflict:
            log.info("conflict on %s, deciding again", aggregate.stream_id)
    raise ConcurrencyConflict(repository.aggregate_type.stream_id_for(aggregate_id), -1)


async def react(
    repository: Repository[A], cause: Cause, aggregate_id: str, step: Callable[[A], object]
) -> Commit | None:
    """Apply `step` to an existing aggregate in reaction to `cause`, exactly once in effect.

    An aggregate that does not exist is logged and skipped; what `step` returns (an outcome)
    is logged when the aggregate recorded nothing, so "why did nothing happen" is answerable.
    """
    outcome: list[object] = []

    def decide(aggregate: A | None) -> A | None:
        if aggregate is None:
            log.warning("%s for unknown %s ignored", cause.what, aggregate_id)
            return None
        outcome[:] = [step(aggregate)]
        return aggregate

    commit = await handle_event(repository, aggregate_id, decide, cause)
    if commit is None and outcome:
        log.info("%s on %s changed nothing: %s", cause.what, aggregate_id, outcome[0])
    return commit
