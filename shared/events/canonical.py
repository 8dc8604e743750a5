"""Canonical JSON: one byte string per value, used for hashing and signatures."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Any

from shared.clock import to_rfc3339

GENESIS_HASH = "0" * 64


def _default(value: object) -> Any:
    if isinstance(value, datetime):
        return to_rfc3339(value)
    raise TypeError(f"not canonical-JSON serialisable: {type(value).__name__}")


def canonical_json(value: Any) -> bytes:
    """Sorted keys, no insignificant whitespace, UTF-8, datetimes as RFC 3339 UTC."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=_default
    ).encode()


def chain_hash(prev_hash: str, events: list[dict[str, Any]]) -> str:
    """The tamper-evidence link of a commit: SHA-256 over the previous hash and its events."""
    digest = hashlib.sha256()
    digest.update(prev_hash.encode())
    digest.update(canonical_json(events))
    return digest.hexdigest()
