"""The message envelope every yellowcart event travels in: a contract with every consumer."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, ClassVar
from uuid import uuid4

import orjson
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator

from shared.kernel.clock import utc
from shared.kernel.events.canonical import canonical_json


class DomainEvent(BaseModel):
    """Base of every event payload: frozen, closed to unknown fields, versioned."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    event_type: ClassVar[str]
    schema_version: ClassVar[int] = 1
    topic: ClassVar[str]

    def partition_key(self) -> str:
        """Kafka key: all events of one order from one service share a partition.

        Events that are not about one order (a seller's penalties) override this."""
        order_id = self.__dict__.get("order_id")
        if order_id is None:
            raise TypeError(f"{type(self).__name__} has no order_id: override partition_key")
        return str(order_id)


class Envelope(BaseModel):
    """One stored and published event: identity, position in its stream, lineage, payload."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    event_id: str = Field(default_factory=lambda: str(uuid4()))
    event_type: str = Field(min_length=1)
    schema_version: int = Field(ge=1)
    stream_id: str = Field(min_length=1)
    stream_version: int = Field(ge=1)
    occurred_at: AwareDatetime
    producer: str = Field(min_length=1)
    correlation_id: str = Field(min_length=1)
    causation_id: str | None = None
    data: dict[str, Any]

    @field_validator("occurred_at")
    @classmethod
    def _in_utc(cls, value: datetime) -> datetime:
        return utc(value)

    def wire(self) -> dict[str, Any]:
        """The JSON-ready form: used on the wire, in storage and for hashing.

        Stores do not call this on their hot path: `canonical_events` writes the same bytes
        without building it (building it field by field was measured no faster than this).
        """
        return self.model_dump(mode="json")

    @classmethod
    def of(
        cls,
        event: DomainEvent,
        *,
        stream_id: str,
        stream_version: int,
        occurred_at: datetime,
        producer: str,
        correlation_id: str,
        causation_id: str | None,
    ) -> Envelope:
        return cls(
            event_type=event.event_type,
            schema_version=event.schema_version,
            stream_id=stream_id,
            stream_version=stream_version,
            occurred_at=occurred_at,
            producer=producer,
            correlation_id=correlation_id,
            causation_id=causation_id,
            data=event.model_dump(mode="json"),
        )


def canonical_events(events: Sequence[Envelope]) -> bytes:
    """`canonical_json([event.wire() for event in events])`: what a commit stores and hashes.

    The common case skips building the wire forms: orjson writes each envelope's fields with
    its `data` as it is, and `occurred_at` with its own RFC 3339 formatter, which for a UTC
    datetime is pydantic's format exactly (the unit tests compare them). Anything in `data`
    that pydantic's JSON mode would write differently from orjson (datetimes, sets, bytes,
    subclasses of builtins, dataclasses) is refused here and takes the exact path via `wire()`.
    """
    forms: list[dict[str, Any]] = []
    for event in events:
        fields = event.__dict__
        occurred_at = fields["occurred_at"]
        if type(occurred_at) is not datetime or occurred_at.tzinfo is not UTC:
            break
        forms.append(
            {
                "event_id": fields["event_id"],
                "event_type": fields["event_type"],
                "schema_version": fields["schema_version"],
                "stream_id": fields["stream_id"],
                "stream_version": fields["stream_version"],
                "occurred_at": _Fragment(_dumps(occurred_at, option=_UTC_Z)),
                "producer": fields["producer"],
                "correlation_id": fields["correlation_id"],
                "causation_id": fields["causation_id"],
                "data": fields["data"],
            }
        )
    else:
        with contextlib.suppress(TypeError):  # refused: take the exact path below
            return _dumps(forms, default=_refuse, option=_EXACT)
    return canonical_json([event.wire() for event in events])


def _refuse(value: object) -> Any:
    raise TypeError(f"left to the exact path: {type(value).__name__}")


_Fragment = orjson.Fragment
_dumps = orjson.dumps
_UTC_Z = orjson.OPT_UTC_Z
_EXACT = (
    orjson.OPT_SORT_KEYS
    | orjson.OPT_PASSTHROUGH_DATETIME
    | orjson.OPT_PASSTHROUGH_DATACLASS
    | orjson.OPT_PASSTHROUGH_SUBCLASS
)
