"""The event kernel: the envelope contract, the registry's upcaster chain, canonical JSON."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any, ClassVar

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from shared.contracts.events import ALL_EVENTS, OrderShipped, default_registry
from shared.kernel.events.canonical import GENESIS_HASH, canonical_json, chain_hash
from shared.kernel.events.envelope import DomainEvent, Envelope
from shared.kernel.events.registry import EventRegistry, UnknownEventType

T0 = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)


def envelope_of(event: DomainEvent, **overrides: Any) -> Envelope:
    fields: dict[str, Any] = {
        "stream_id": "order-o-1",
        "stream_version": 1,
        "occurred_at": T0,
        "producer": "order",
        "correlation_id": "o-1",
        "causation_id": None,
    }
    return Envelope.of(event, **{**fields, **overrides})


class ShippedV3(DomainEvent):
    """A future OrderShipped: v2 renamed tracking_number → tracking, v3 added a carrier."""

    event_type: ClassVar[str] = "OrderShipped"
    schema_version: ClassVar[int] = 3
    topic: ClassVar[str] = "order.events"
    order_id: str
    seller_id: str
    tracking: str | None
    carrier: str


def registry_with_upcasters() -> EventRegistry:
    registry = EventRegistry([ShippedV3])

    def rename(data: dict[str, Any]) -> dict[str, Any]:
        data["tracking"] = data.pop("tracking_number", None)
        return data

    registry.add_upcaster("OrderShipped", 1, rename)
    registry.add_upcaster("OrderShipped", 2, lambda data: {**data, "carrier": "unknown"})
    return registry


def test_an_old_event_is_upcast_step_by_step_to_the_current_version() -> None:
    old = envelope_of(OrderShipped(order_id="o-1", seller_id="s-1", tracking_number="JNE1"))
    event = registry_with_upcasters().decode(old)
    assert event == ShippedV3(order_id="o-1", seller_id="s-1", tracking="JNE1", carrier="unknown")


def test_a_missing_upcaster_step_is_an_error_not_a_silent_guess() -> None:
    registry = EventRegistry([ShippedV3])
    registry.add_upcaster("OrderShipped", 2, lambda data: data)
    old = envelope_of(OrderShipped(order_id="o-1", seller_id="s-1"))
    with pytest.raises(ValueError, match="no upcaster for OrderShipped v1"):
        registry.decode(old)


def test_an_event_newer_than_the_reader_is_refused() -> None:
    future = envelope_of(OrderShipped(order_id="o-1", seller_id="s-1")).model_copy(
        update={"schema_version": 9}
    )
    with pytest.raises(ValueError, match="newer than this reader"):
        default_registry().decode(future)


def test_unknown_event_types_are_tolerated_and_counted() -> None:
    registry = default_registry()
    stranger = envelope_of(OrderShipped(order_id="o-1", seller_id="s-1")).model_copy(
        update={"event_type": "OrderGiftWrapped"}
    )
    assert registry.decode(stranger) is None
    assert registry.decode(stranger) is None
    assert registry.unknown["OrderGiftWrapped"] == 2
    with pytest.raises(UnknownEventType):
        registry.class_of("OrderGiftWrapped")


def test_data_that_does_not_fit_the_schema_is_a_validation_error() -> None:
    bad = envelope_of(OrderShipped(order_id="o-1", seller_id="s-1")).model_copy(
        update={"data": {"order_id": "o-1"}}
    )
    with pytest.raises(ValidationError):
        default_registry().decode(bad)


def test_every_published_event_round_trips_through_the_envelope() -> None:
    registry = default_registry()
    assert {cls.event_type for cls in ALL_EVENTS} == {cls.event_type for cls in registry.classes()}
    event = OrderShipped(order_id="o-1", seller_id="s-1", tracking_number="JNE1")
    wire = envelope_of(event).wire()
    assert registry.decode(Envelope.model_validate(wire)) == event


def test_the_envelope_is_frozen_and_closed() -> None:
    envelope = envelope_of(OrderShipped(order_id="o-1", seller_id="s-1"))
    with pytest.raises(ValidationError):
        envelope.stream_version = 2  # type: ignore[misc]
    with pytest.raises(ValidationError, match="Extra inputs"):
        Envelope.model_validate({**envelope.wire(), "status": "paid"})


def test_event_time_is_stored_in_utc_and_naive_time_is_refused() -> None:
    jakarta = timezone(timedelta(hours=7))
    envelope = envelope_of(
        OrderShipped(order_id="o-1", seller_id="s-1"),
        occurred_at=datetime(2026, 11, 26, 17, 0, tzinfo=jakarta),
    )
    assert envelope.occurred_at == T0 and envelope.occurred_at.tzinfo == UTC
    assert envelope.wire()["occurred_at"] == "2026-11-26T10:00:00Z"
    with pytest.raises(ValidationError):
        envelope_of(
            OrderShipped(order_id="o-1", seller_id="s-1"), occurred_at=T0.replace(tzinfo=None)
        )


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@given(st.dictionaries(st.text(), json_values, max_size=6))
def test_canonical_json_does_not_depend_on_key_order(value: dict[str, Any]) -> None:
    reordered = dict(reversed(list(value.items())))
    assert canonical_json(value) == canonical_json(reordered)


def test_canonical_json_is_compact_sorted_utf8() -> None:
    assert canonical_json({"b": 1, "a": "Bandung ✓"}) == '{"a":"Bandung ✓","b":1}'.encode()


def test_the_chain_hash_depends_on_the_previous_hash_and_every_event() -> None:
    events = [{"event_type": "OrderPlaced", "data": {"order_id": "o-1"}}]
    first = chain_hash(GENESIS_HASH, events)
    assert first == chain_hash(GENESIS_HASH, [dict(events[0])])
    assert first != chain_hash("f" * 64, events)
    assert first != chain_hash(
        GENESIS_HASH, [{"event_type": "OrderPlaced", "data": {"order_id": "o-2"}}]
    )
