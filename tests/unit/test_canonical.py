"""Canonical JSON keeps its definition (shared/events/canonical.py): orjson with sorted keys,
the standard library in the same layout for what orjson cannot write. Stored hash chains
depend on it byte for byte."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic_core import from_json

from shared.kernel.events.canonical import canonical_json


def standard_library(value: Any) -> bytes:
    """The layout, written out independently of the module under test."""
    return json.dumps(
        value,
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        default=lambda moment: moment.astimezone(UTC).isoformat().replace("+00:00", "Z"),
    ).encode()


texts = st.text(st.characters(exclude_categories=("Cs",)), max_size=12)
float_free = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**63), max_value=2**64 - 1) | texts,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(texts, children, max_size=5),
    max_leaves=30,
)
with_floats = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | texts,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(texts, children, max_size=5),
    max_leaves=30,
)


@settings(max_examples=120, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(texts, float_free, max_size=6))
def test_without_floats_it_is_the_standard_librarys_compact_sorted_utf8(value: Any) -> None:
    assert canonical_json(value) == standard_library(value)


@settings(max_examples=120, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(texts, with_floats, max_size=6))
def test_a_value_read_back_from_storage_encodes_to_the_same_bytes(value: Any) -> None:
    """What a store writes, parses back (as the SQLite reader does) and hashes again."""
    encoded = canonical_json(value)
    assert canonical_json(from_json(encoded)) == encoded


@settings(max_examples=100)
@given(st.dictionaries(texts, with_floats, max_size=6))
def test_key_order_does_not_matter(value: dict[str, Any]) -> None:
    assert canonical_json(dict(reversed(list(value.items())))) == canonical_json(value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (
            {"rate": 0.025, "tiny": 0.00001, "big": 1e16},
            b'{"big":1e+16,"rate":0.025,"tiny":0.00001}',
        ),
        ({"nan": math.nan, "inf": math.inf}, b'{"inf":null,"nan":null}'),
        ({"b": 1, "a": "Bandung ✓"}, '{"a":"Bandung ✓","b":1}'.encode()),
        (
            {"when": datetime(2026, 3, 1, 16, 0, 0, 5, tzinfo=timezone(timedelta(hours=7)))},
            b'{"when":"2026-03-01T09:00:00.000005Z"}',
        ),
        ({"n": 2**64 + 1, "f": 0.5}, b'{"f":0.5,"n":18446744073709551617}'),
        ({"a": {2: "b", 1: "a"}}, b'{"a":{"1":"a","2":"b"}}'),
    ],
    ids=["floats", "nan-inf", "unicode", "datetime", "big-int", "int-keys"],
)
def test_the_definition_on_edge_cases(value: Any, expected: bytes) -> None:
    assert canonical_json(value) == expected


def test_values_json_cannot_express_are_refused() -> None:
    with pytest.raises(TypeError):
        canonical_json({"d": datetime(2026, 1, 1).date()})
    with pytest.raises(TypeError):
        canonical_json({"b": b"bytes"})
