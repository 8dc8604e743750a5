"""Canonical JSON stays byte-identical to its definition (the standard library's output).

Stored hash chains were computed with `json.dumps(sort_keys=True, separators=(",", ":"),
ensure_ascii=False)`; the orjson fast path must never produce another byte for any value.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.events import canonical
from shared.events.canonical import canonical_json, fast_canonical_json


def reference(value: Any) -> bytes:
    """The definition, written out independently of the module under test."""
    return json.dumps(
        value,
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        default=lambda moment: moment.astimezone(UTC).isoformat().replace("+00:00", "Z"),
    ).encode()


texts = st.text(st.characters(exclude_categories=("Cs",)), max_size=12)
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | texts
)
json_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(texts, children, max_size=5),
    max_leaves=30,
)
containers = st.lists(json_values, max_size=5) | st.dictionaries(texts, json_values, max_size=6)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(containers)
def test_canonical_json_equals_the_standard_library_on_random_json(value: Any) -> None:
    assert canonical_json(value) == reference(value)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(containers)
def test_the_fast_path_answers_only_with_the_canonical_bytes(value: Any) -> None:
    encoded = fast_canonical_json(value)
    if encoded is not None and not _has_nan_or_infinity(value):
        assert encoded == reference(value)


@settings(max_examples=500)
@given(st.floats(allow_nan=False, allow_infinity=False))
def test_every_float_orjson_writes_is_recognised_as_one(number: float) -> None:
    """The fast path relies on spotting floats in orjson's output (a fraction or a signed
    exponent); an orjson release writing them otherwise must fail here, not in a chain."""
    for value in ([number], [1, number], {"a": number}, {"a": [number, 2]}, {"a": {"b": number}}):
        assert canonical._has_float_token(orjson.dumps(value))
        assert fast_canonical_json(value) is None
        assert canonical_json(value) == reference(value)


def test_floats_across_every_exponent_fall_back() -> None:
    for exponent in range(-324, 309):
        for mantissa in (1.0, 1.5, 9.999999999999998, 2.2250738585072014):
            try:
                number = mantissa * 10.0**exponent
            except OverflowError:
                continue
            if math.isfinite(number):
                value = {"x": [-number, number]}
                assert canonical._has_float_token(orjson.dumps(value)), number
                assert canonical_json(value) == reference(value)


@pytest.mark.parametrize(
    "value",
    [
        {"t": "2026-03-01T09:00:00.000137Z", "n": 12, "s": "Kav. 52-53", "u": "3e-4a"},
        ["a:1.5", "x,2e+5]", 7],  # strings that look like floats only cost the fallback
        {"é": "😀", "\u2028": "\x7f", "ctl": "\x00\x1f\b\f\n\r\t", "q": '"\\/'},
        {"big": 2**64 - 1, "bigger": 2**64, "neg": -(2**63), "below": -(2**63) - 1},
        {"nan": math.nan, "inf": math.inf, "ninf": -math.inf, "none": None},
        {"when": datetime(2026, 3, 1, 16, 0, 0, 5, tzinfo=timezone(timedelta(hours=7)))},
        {"nested": {"b": [1, {"a": (1, 2)}], "a": []}},
        {"1": 1, "10": 2, "2": 3, "B": 4, "a": 5, "ä": 6, "Z": 7, "": 8},
        [],
        {},
    ],
)
def test_edge_cases_equal_the_standard_library(value: Any) -> None:
    assert canonical_json(value) == reference(value)


def test_values_the_standard_library_refuses_are_still_refused() -> None:
    with pytest.raises(TypeError):
        canonical_json({"d": datetime(2026, 1, 1).date()})
    with pytest.raises(TypeError):
        canonical_json({"b": b"bytes"})
    with pytest.raises(UnicodeEncodeError):
        canonical_json({"lone": "\ud800"})


def test_non_string_keys_and_subclasses_take_the_exact_path() -> None:
    class Text(str):
        pass

    value: dict[str, Any] = {"a": {1: "a", 2: "b"}, "b": Text("c"), "d": {2.5: True}}
    assert fast_canonical_json(value) is None
    assert canonical_json(value) == reference(value)


def _has_nan_or_infinity(value: Any) -> bool:
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, dict):
        return any(_has_nan_or_infinity(item) for item in value.values())
    if isinstance(value, list):
        return any(_has_nan_or_infinity(item) for item in value)
    return False
