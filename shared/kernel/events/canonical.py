"""Canonical JSON: one byte string per value, used for hashing and signatures.

The definition is part of the audit contract — stored hash chains depend on it byte for byte:
**orjson's output with sorted keys**: UTF-8, no insignificant whitespace, non-ASCII written as
is, integers in decimal, floats in their shortest round-trip form (`0.025`, `0.00001`, `1e+16`),
NaN and infinities as `null`, datetimes as RFC 3339 in UTC with a `Z`. A value orjson cannot
write (an integer beyond 64 bits, a non-string key) is written by the standard library in the
same layout (`sort_keys`, compact separators, `ensure_ascii=False`). Both are deterministic, and
a value read back from storage takes the same path again, so a chain always re-verifies.
Changing this definition is changing the hash algorithm: it would need a version on commits.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Any

import orjson

from shared.kernel.clock import to_rfc3339

GENESIS_HASH = "0" * 64
_OPTIONS = orjson.OPT_SORT_KEYS | orjson.OPT_PASSTHROUGH_DATETIME


def _default(value: object) -> Any:
    if isinstance(value, datetime):
        return to_rfc3339(value)
    raise TypeError(f"not canonical-JSON serialisable: {type(value).__name__}")


def canonical_json(value: Any) -> bytes:
    """Sorted keys, no insignificant whitespace, UTF-8, datetimes as RFC 3339 UTC."""
    try:
        return orjson.dumps(value, default=_default, option=_OPTIONS)
    except TypeError:  # orjson.JSONEncodeError is a TypeError
        return json.dumps(
            value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=_default
        ).encode()


def chain_hash(prev_hash: str, events: list[dict[str, Any]]) -> str:
    """The tamper-evidence link of a commit: SHA-256 over the previous hash and its events."""
    digest = hashlib.sha256()
    digest.update(prev_hash.encode())
    digest.update(canonical_json(events))
    return digest.hexdigest()
