"""`Envelope.wire()` and `canonical_events` are shortcuts: they must equal what they replace.

`wire()` must equal `model_dump(mode="json")`, and `canonical_events(events)` must be the bytes
the stores write and hash: the canonical JSON of the wires (shared/events/canonical.py).
"""

from __future__ import annotations

import math
import uuid
from datetime import UTC, datetime, timedelta, timezone
from enum import Enum
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.kernel.events.canonical import GENESIS_HASH, canonical_json, chain_hash
from shared.kernel.events.envelope import Envelope, canonical_events
from shared.kernel.eventstore.chain import seal_canonical


def reference_canonical(wires: list[dict[str, Any]]) -> bytes:
    return canonical_json(wires)


def envelope(occurred_at: datetime, data: dict[str, Any], **fields: Any) -> Envelope:
    values: dict[str, Any] = {
        "event_type": "OrderPlaced",
        "schema_version": 1,
        "stream_id": "order-1",
        "stream_version": 1,
        "producer": "order",
        "correlation_id": "c-1",
    }
    values.update(fields)
    return Envelope(occurred_at=occurred_at, data=data, **values)


class Colour(Enum):
    RED = "merah"
    COUNT = 3
    RATIO = 0.5


texts = st.text(st.characters(exclude_categories=("Cs",)), max_size=10)
moments = st.datetimes(
    min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.just(UTC)
) | st.datetimes(
    min_value=datetime(1, 1, 2),
    max_value=datetime(9999, 12, 30),
    timezones=st.sampled_from([timezone(timedelta(hours=7)), timezone(timedelta(hours=-5))]),
)
leaves = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()
    | texts
    | moments
    | st.uuids()
    | st.sampled_from(list(Colour))
)
values = st.recursive(
    leaves,
    lambda children: (
        st.lists(children, max_size=4)
        | st.tuples(children, children)
        | st.dictionaries(texts, children, max_size=4)
    ),
    max_leaves=20,
)
datas = st.dictionaries(texts, values, max_size=6)


@settings(max_examples=250, suppress_health_check=[HealthCheck.too_slow])
@given(moments, datas, st.none() | texts.filter(bool))
def test_wire_equals_model_dump_json(
    occurred_at: datetime, data: dict[str, Any], causation_id: str | None
) -> None:
    event = envelope(occurred_at, data, causation_id=causation_id)
    assert event.wire() == event.model_dump(mode="json")


@settings(max_examples=250, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(moments, datas), min_size=1, max_size=4))
def test_canonical_events_are_the_bytes_of_the_wire_forms(
    specs: list[tuple[datetime, dict[str, Any]]],
) -> None:
    events = [
        envelope(moment, data, stream_version=version)
        for version, (moment, data) in enumerate(specs, start=1)
    ]
    wires = [event.model_dump(mode="json") for event in events]
    assert canonical_events(events) == reference_canonical(wires)
    assert seal_canonical(GENESIS_HASH, canonical_events(events)) == chain_hash(GENESIS_HASH, wires)


@pytest.mark.parametrize(
    "occurred_at",
    [
        datetime(2026, 3, 1, 9, 0, tzinfo=UTC),
        datetime(2026, 3, 1, 9, 0, 0, 137, tzinfo=UTC),
        datetime(2026, 3, 1, 9, 0, 0, 137000, tzinfo=UTC),
        datetime(2026, 3, 1, 9, 0, 0, 999999, tzinfo=UTC),
        datetime(1, 1, 1, tzinfo=UTC),
        datetime(999, 12, 31, 23, 59, 59, 1, tzinfo=UTC),
        datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
        datetime(2026, 3, 1, 16, 0, 0, 5, tzinfo=timezone(timedelta(hours=7))),
    ],
)
def test_occurred_at_is_written_as_pydantic_writes_it(occurred_at: datetime) -> None:
    event = envelope(occurred_at, {"order_id": "1"})
    dumped = event.model_dump(mode="json")
    assert event.wire() == dumped
    assert canonical_events([event]) == reference_canonical([dumped])


def test_data_that_json_mode_rewrites_takes_the_exact_path() -> None:
    data = {
        "when": datetime(2026, 3, 1, 9, 0, tzinfo=UTC),
        "ratio": 0.1,
        "tiny": 1e-05,
        "nan": math.nan,
        "pair": (1, "a"),
        "ids": {1: uuid.UUID(int=7)},
        "colour": Colour.RED,
        "items": {"x", "y"} - {"y"},
        "text": "kirim “cepat” ya — 🙏",
    }
    event = envelope(datetime(2026, 3, 1, 9, 0, 0, 5, tzinfo=UTC), data)
    dumped = event.model_dump(mode="json")
    assert event.wire() == dumped
    assert canonical_events([event]) == reference_canonical([dumped])


def test_a_model_constructed_envelope_is_still_dumped_exactly() -> None:
    event = Envelope.model_construct(
        event_id="e-1",
        event_type="OrderPlaced",
        schema_version=1,
        stream_id="order-1",
        stream_version=1,
        occurred_at=datetime(2026, 3, 1, 16, 0, tzinfo=timezone(timedelta(hours=7))),
        producer="order",
        correlation_id="c-1",
        causation_id=None,
        data={"a": 1},
    )
    dumped = event.model_dump(mode="json")
    assert event.wire() == dumped
    assert canonical_events([event]) == reference_canonical([dumped])


def test_wire_is_a_copy_the_caller_may_change() -> None:
    event = envelope(datetime(2026, 3, 1, tzinfo=UTC), {"items": [{"qty": 1}]})
    wire = event.wire()
    wire["data"]["items"][0]["qty"] = 2
    assert event.data == {"items": [{"qty": 1}]}
