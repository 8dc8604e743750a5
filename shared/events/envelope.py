"""The message envelope every yellowcart event travels in (DESIGN §3, a contract)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar
from uuid import uuid4

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator

from shared.clock import utc


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
        """The JSON-ready form: used on the wire, in storage and for hashing."""
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
