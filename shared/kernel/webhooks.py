"""Signed callbacks from a payment provider: what is signed, and how a callback is checked.

The provider signs `<timestamp>.<raw body>` with HMAC-SHA256 under the shared secret and sends
the timestamp (Unix seconds) and the hex digest in two headers. The signature covers the
timestamp, so a captured callback cannot be sent again later: one whose timestamp is further
than the tolerance from our clock is refused, however well signed. Hex digits are compared
case-insensitively, in constant time. A callback sent again within the window (the provider
retries until it gets a 2xx) is harmless: its gateway reference makes it a duplicate.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import datetime, timedelta

SIGNATURE_HEADER = "X-Yellowcart-Signature"
TIMESTAMP_HEADER = "X-Yellowcart-Timestamp"


class CallbackRefused(Exception):
    """The callback is not provably from the provider, or not fresh; nothing was recorded."""


def sign_callback(secret: str, timestamp: int, body: bytes) -> str:
    """The hex HMAC-SHA256 of `<timestamp>.<body>`."""
    message = str(timestamp).encode() + b"." + body
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def signed_headers(secret: str, body: bytes, now: datetime) -> dict[str, str]:
    """The headers a provider sends with `body` at `now`."""
    timestamp = int(now.timestamp())
    return {
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: sign_callback(secret, timestamp, body),
    }


def verify_callback(
    secret: str,
    body: bytes,
    *,
    timestamp: str | None,
    signature: str | None,
    now: datetime,
    tolerance: timedelta,
) -> None:
    """Raises CallbackRefused, saying why in words a provider's engineer can act on."""
    if not timestamp or not signature:
        raise CallbackRefused(f"{TIMESTAMP_HEADER} and {SIGNATURE_HEADER} are both required")
    if not (timestamp.isascii() and timestamp.isdigit()) or len(timestamp) > 12:
        raise CallbackRefused(f"{TIMESTAMP_HEADER} must be Unix seconds")
    age = abs(now.timestamp() - int(timestamp))
    if age > tolerance.total_seconds():
        raise CallbackRefused(
            f"{TIMESTAMP_HEADER} is {age:.0f} s away from our clock, beyond the "
            f"{tolerance.total_seconds():.0f} s window: a replayed or delayed callback"
        )
    expected = sign_callback(secret, int(timestamp), body).encode()
    given = signature.strip().lower().encode("utf-8", "replace")
    if not hmac.compare_digest(expected, given):
        raise CallbackRefused(f"{SIGNATURE_HEADER} does not match the body and timestamp")
