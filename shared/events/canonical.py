"""Canonical JSON: one byte string per value, used for hashing and signatures.

The definition is the standard library's `json.dumps(value, sort_keys=True,
separators=(",", ":"), ensure_ascii=False)` encoded as UTF-8, datetimes as RFC 3339 UTC. Stored
hash chains were computed with exactly that, so it must never change by a byte.

`orjson` (with sorted keys) writes the same bytes for strings, integers, booleans, null, lists
and dicts with string keys, roughly ten times faster. It differs on floats (exponent style:
`0.00001` against `1e-05`), writes NaN and infinities as `null` (the standard library writes
`NaN`), and refuses or treats differently what the standard library hands to `default`. So
`fast_canonical_json` returns orjson's bytes only when none of that can be in them, and
None otherwise; the caller then falls back to the standard library:

* anything orjson does not serialise natively (datetimes, dataclasses, subclasses of str,
  int, dict and list, Decimals, sets, integers beyond 64 bits, non-string keys, strings that
  are not valid Unicode, nesting deeper than orjson allows) makes orjson raise, directly or
  through `_refuse`;
* a float shows up in orjson's output as a number token with a fraction or a signed exponent
  (`_has_float_token`), and that output is discarded (a string that merely looks like one,
  such as `"a:1.5,"`, only costs the fallback);
* NaN and infinities are floats whose output looks like `null`: callers that cannot rule
  them out check with `_has_float` whenever the output contains `null`.

The only values on which the two still differ are ones the standard library refuses and
orjson accepts natively: UUIDs and Enum members (orjson writes their string or value).
The property tests in tests/unit/test_canonical.py compare both on random JSON values.
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import datetime
from typing import Any

import orjson

from shared.clock import to_rfc3339

GENESIS_HASH = "0" * 64

_ORJSON_OPTIONS = (
    orjson.OPT_SORT_KEYS
    | orjson.OPT_PASSTHROUGH_DATETIME
    | orjson.OPT_PASSTHROUGH_DATACLASS
    | orjson.OPT_PASSTHROUGH_SUBCLASS
)
# A whole number token: optional minus, digits, optional fraction and exponent, then its end.
_NUMBER_TOKEN = re.compile(rb"-?[0-9]+(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?[,}\]]")
_DIGITS = frozenset(b"0123456789")
_BEFORE_VALUE = frozenset(b":,[")
_MINUS = ord("-")
# orjson writes a float with a fraction (`1.5`, `0.00001`) or a signed exponent (`1e+16`,
# `5e-324`) or both; tests/unit/test_canonical.py holds it to that.
_FLOAT_MARKERS = (b".", b"e+", b"e-")


def _has_float_token(encoded: bytes) -> bool:
    """Whether orjson's compact output holds a float: a number token with a fraction or an
    exponent where a value starts (after `:`, `,` or `[`), outside any string.

    Looks only at the places where a float marker follows a digit (bytes.find is memchr-fast,
    a regular expression over the whole output is several times slower); a string such as
    `"a:1.5,"` looks like a float and only costs the fallback, never a wrong answer.
    """
    for marker in _FLOAT_MARKERS:
        position = encoded.find(marker)
        while position > 0:
            if encoded[position - 1] in _DIGITS:
                start = position - 1
                while start and encoded[start - 1] in _DIGITS:
                    start -= 1
                if start and encoded[start - 1] == _MINUS:
                    start -= 1
                if (
                    start
                    and encoded[start - 1] in _BEFORE_VALUE
                    and _NUMBER_TOKEN.match(encoded, start) is not None
                ):
                    return True
            position = encoded.find(marker, position + 1)
    return False


def _refuse(value: object) -> Any:
    raise TypeError(f"left to the standard library: {type(value).__name__}")


def fast_canonical_json(value: dict[str, Any] | list[Any]) -> bytes | None:
    """orjson's bytes for `value` when they are the canonical ones, else None.

    None also when `value` holds a float: if it may hold NaN or an infinity, which orjson
    writes as `null`, the caller must check that too (see the module docstring).
    """
    try:
        encoded = orjson.dumps(value, default=_refuse, option=_ORJSON_OPTIONS)
    except TypeError:  # orjson.JSONEncodeError is a TypeError
        return None
    if _has_float_token(encoded):
        return None
    return encoded


def _has_float(value: Any) -> bool:
    if isinstance(value, float):
        return True
    if isinstance(value, dict):
        return any(_has_float(item) for item in value.values())
    if isinstance(value, list | tuple):
        return any(_has_float(item) for item in value)
    return False


def _default(value: object) -> Any:
    if isinstance(value, datetime):
        return to_rfc3339(value)
    raise TypeError(f"not canonical-JSON serialisable: {type(value).__name__}")


def _standard_canonical_json(value: Any) -> bytes:
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=_default
    ).encode()


def canonical_json(value: Any) -> bytes:
    """Sorted keys, no insignificant whitespace, UTF-8, datetimes as RFC 3339 UTC."""
    if type(value) is dict or type(value) is list:
        encoded = fast_canonical_json(value)
        if encoded is not None and (b"null" not in encoded or not _has_float(value)):
            return encoded
    return _standard_canonical_json(value)


def chain_hash(prev_hash: str, events: list[dict[str, Any]]) -> str:
    """The tamper-evidence link of a commit: SHA-256 over the previous hash and its events."""
    digest = hashlib.sha256()
    digest.update(prev_hash.encode())
    digest.update(canonical_json(events))
    return digest.hexdigest()
