"""Event types by (type, schema_version), with an upcaster chain to the current version.

A reader decodes an envelope into the current payload class; old versions are upcast step by
step; types it does not know are tolerated and counted (a tolerant reader: a consumer never
fails on an event type added after it was built).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

from shared.kernel.events.envelope import DomainEvent, Envelope

Upcaster = Callable[[dict[str, Any]], dict[str, Any]]


class UnknownEventType(LookupError):
    """The registry has no class for this event type (a tolerant reader skips such events)."""


class EventRegistry:
    def __init__(self, event_classes: Iterable[type[DomainEvent]] = ()) -> None:
        self._classes: dict[str, type[DomainEvent]] = {}
        self._upcasters: dict[tuple[str, int], Upcaster] = {}
        self.unknown: Counter[str] = Counter()
        for event_class in event_classes:
            self.register(event_class)

    def register(self, event_class: type[DomainEvent]) -> type[DomainEvent]:
        self._classes[event_class.event_type] = event_class
        return event_class

    def add_upcaster(self, event_type: str, from_version: int, upcaster: Upcaster) -> None:
        """`upcaster` turns the data of `from_version` into the data of `from_version + 1`."""
        self._upcasters[(event_type, from_version)] = upcaster

    def knows(self, event_type: str) -> bool:
        return event_type in self._classes

    def classes(self) -> list[type[DomainEvent]]:
        return list(self._classes.values())

    def class_of(self, event_type: str) -> type[DomainEvent]:
        try:
            return self._classes[event_type]
        except KeyError:
            raise UnknownEventType(event_type) from None

    def upcast(self, event_type: str, version: int, data: dict[str, Any]) -> dict[str, Any]:
        current = self.class_of(event_type).schema_version
        if version > current:
            raise ValueError(f"{event_type} v{version} is newer than this reader (v{current})")
        while version < current:
            step = self._upcasters.get((event_type, version))
            if step is None:
                raise ValueError(f"no upcaster for {event_type} v{version}")
            data = step(dict(data))
            version += 1
        return data

    def decode(self, envelope: Envelope) -> DomainEvent | None:
        """The payload as its current class, or None (counted) for a type this reader lacks.

        Raises pydantic.ValidationError when the data does not fit the schema.
        """
        if not self.knows(envelope.event_type):
            self.unknown[envelope.event_type] += 1
            return None
        data = self.upcast(envelope.event_type, envelope.schema_version, envelope.data)
        return self.class_of(envelope.event_type).model_validate(data)
