"""Load, decide, save: the one shape every use case takes.

`Repository` turns an aggregate's recorded events into one commit (events, timers, causation
key, outbox flag) and rebuilds aggregates from their streams. `handle_event` is the idempotent
consumer step: the commit carries the incoming event's id as its causation id, a repeat is
refused by the store and counted as done, and a lost race reloads and decides again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Generic, TypeVar

from shared.kernel.aggregate import Aggregate
from shared.kernel.clock import Clock
from shared.kernel.events.envelope import DomainEvent, Envelope
from shared.kernel.events.registry import EventRegistry
from shared.kernel.eventstore.port import (
    Commit,
    ConcurrencyConflict,
    DuplicateCausation,
    EventStore,
    NewCommit,
    NewTimer,
    StreamNotFound,
)

A = TypeVar("A", bound=Aggregate)
log = logging.getLogger(__name__)


class Repository(Generic[A]):
    def __init__(
        self,
        store: EventStore,
        aggregate_type: type[A],
        registry: EventRegistry,
        producer: str,
        clock: Clock,
    ) -> None:
        self.store = store
        self.aggregate_type = aggregate_type
        self.registry = registry
        self.producer = producer
        self.clock = clock

    async def events_of(self, aggregate_id: str) -> list[DomainEvent] | None:
        """The aggregate's events in order (upcast), or None when its stream does not exist."""
        stream_id = self.aggregate_type.stream_id_for(aggregate_id)
        try:
            envelopes = await self.store.load_stream(stream_id)
        except StreamNotFound:
            return None
        events = [self.registry.decode(envelope) for envelope in envelopes]
        return [event for event in events if event is not None]

    async def get(self, aggregate_id: str) -> A | None:
        events = await self.events_of(aggregate_id)
        return None if events is None else self.aggregate_type.replay(aggregate_id, events)

    async def save(
        self, aggregate: A, *, causation_id: str | None, correlation_id: str
    ) -> Commit | None:
        """Store what the aggregate recorded as one commit; None when it recorded nothing."""
        if not aggregate.pending:
            return None
        now = self.clock.now()
        envelopes = [
            Envelope.of(
                event,
                stream_id=aggregate.stream_id,
                stream_version=aggregate.version + index,
                occurred_at=now,
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
        commit = await self.store.append(
            NewCommit(
                stream_id=aggregate.stream_id,
                expected_version=aggregate.version,
                events=envelopes,
                topic=first.topic,
                partition_key=first.partition_key(),
                causation_id=causation_id,
                timers=timers,
            )
        )
        aggregate.version += len(aggregate.pending)
        aggregate.pending.clear()
        aggregate.pending_timers.clear()
        return commit


async def handle_event(
    repository: Repository[A],
    aggregate_id: str,
    decide: Callable[[A | None], A | None],
    *,
    causation_id: str,
    correlation_id: str,
    attempts: int = 5,
) -> Commit | None:
    """React to an event (or a fired timer) exactly once in effect.

    `decide` gets the current aggregate (None if it does not exist yet) and returns the
    aggregate with recorded events, or None to do nothing. A duplicate cause is a no-op; a
    concurrency conflict reloads and decides again.
    """
    for _ in range(attempts):
        aggregate = decide(await repository.get(aggregate_id))
        if aggregate is None:
            return None
        try:
            return await repository.save(
                aggregate, causation_id=causation_id, correlation_id=correlation_id
            )
        except DuplicateCausation:
            log.info("already handled %s", causation_id)
            return None
        except ConcurrencyConflict:
            log.info("conflict on %s, deciding again", aggregate.stream_id)
    raise ConcurrencyConflict(repository.aggregate_type.stream_id_for(aggregate_id), -1)


async def react(
    repository: Repository[A],
    envelope: Envelope,
    aggregate_id: str,
    step: Callable[[A], object],
) -> Commit | None:
    """Apply `step` to an existing aggregate in reaction to `envelope`, exactly once in effect.

    An aggregate that does not exist is logged and skipped; what `step` returns (an outcome)
    is logged when the aggregate recorded nothing, so "why did nothing happen" is answerable.
    """
    outcome: list[object] = []

    def decide(aggregate: A | None) -> A | None:
        if aggregate is None:
            log.warning("%s for unknown %s ignored", envelope.event_type, aggregate_id)
            return None
        outcome[:] = [step(aggregate)]
        return aggregate

    commit = await handle_event(
        repository,
        aggregate_id,
        decide,
        causation_id=envelope.event_id,
        correlation_id=envelope.correlation_id,
    )
    if commit is None and outcome:
        log.info("%s on %s changed nothing: %s", envelope.event_type, aggregate_id, outcome[0])
    return commit
