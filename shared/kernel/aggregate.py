"""The shape every event-sourced aggregate takes: guards decide, events mutate.

An aggregate is pure: no I/O, no clock reads. A command method checks its guards, then
`record`s events; `apply` is the only code that changes state, and replaying a stream calls the
same `apply`. Timers an aggregate needs (a payment deadline, a response window) are asked for
with `schedule`; the application stores them in the same atomic write as the events.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar, Self

from shared.kernel.events.envelope import DomainEvent


class DomainError(Exception):
    """A command refused by a rule. `kind` says what kind of refusal it is, for the edges."""

    kind: str = "conflict"  # conflict | invalid | not_found | forbidden

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class Conflict(DomainError):
    kind = "conflict"


class Invalid(DomainError):
    kind = "invalid"


class NotFound(DomainError):
    kind = "not_found"


class Forbidden(DomainError):
    kind = "forbidden"


@dataclass(frozen=True)
class TimerRequest:
    """A durable timer an aggregate asks for; `name` tells its handler what fired."""

    name: str
    due_at: datetime
    data: dict[str, Any]


class Aggregate(ABC):
    stream_prefix: ClassVar[str]

    def __init__(self, aggregate_id: str) -> None:
        self.id = aggregate_id
        self.version = 0
        self.pending: list[DomainEvent] = []
        self.pending_timers: list[TimerRequest] = []

    @classmethod
    def stream_id_for(cls, aggregate_id: str) -> str:
        return f"{cls.stream_prefix}-{aggregate_id}"

    @property
    def stream_id(self) -> str:
        return self.stream_id_for(self.id)

    @classmethod
    def replay(cls, aggregate_id: str, events: Iterable[DomainEvent]) -> Self:
        aggregate = cls(aggregate_id)
        for event in events:
            aggregate.apply(event)
            aggregate.version += 1
        return aggregate

    @abstractmethod
    def apply(self, event: DomainEvent) -> None:
        """Change state by one event; the only place state changes."""

    def record(self, event: DomainEvent) -> None:
        self.apply(event)
        self.pending.append(event)

    def schedule(self, name: str, due_at: datetime, **data: Any) -> None:
        self.pending_timers.append(TimerRequest(name, due_at, data))
