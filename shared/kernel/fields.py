"""Strict field types for everything that crosses an edge (HTTP bodies, headers, events).

Pydantic's default ("lax") mode turns JSON `true` into the integer 1, `"2"` into 2 and a
number into a datetime. At an edge that is a lie about what the caller sent, so every number,
flag and instant that comes from outside is declared with these helpers instead: a wrong JSON
type is refused with 422 naming the field. Text is printable (no control characters, which
would end up in logs, headers and other systems' screens) and bounded in length. The bounds
and patterns are part of the generated OpenAPI and JSON Schemas.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import AwareDatetime, BeforeValidator, Field

PRINTABLE = r"^[^\x00-\x1f\x7f-\x9f]*$"
"""No C0 or C1 control characters (NUL, newline, escape, DEL …) anywhere in the text."""

IDENTIFIER = r"^[A-Za-z0-9][A-Za-z0-9._:@-]*$"
"""Ids (orders, sellers, filings, gateway references): letters, digits and `._:@-`."""


def text(max_length: int, *, min_length: int = 1, **field: Any) -> Any:
    """A printable string of `min_length`..`max_length` characters (never coerced)."""
    return Field(
        min_length=min_length, max_length=max_length, pattern=PRINTABLE, strict=True, **field
    )


def identifier(max_length: int = 64, **field: Any) -> Any:
    """An id: 1..`max_length` characters of `IDENTIFIER`."""
    return Field(min_length=1, max_length=max_length, pattern=IDENTIFIER, strict=True, **field)


def whole(*, ge: int | None = None, gt: int | None = None, le: int, **field: Any) -> Any:
    """An integer with both bounds stated; JSON `true`, `2.0` or `"2"` are not integers."""
    return Field(ge=ge, gt=gt, le=le, strict=True, **field)


def flag(**field: Any) -> Any:
    """A boolean; `1` or `"true"` are not booleans."""
    return Field(strict=True, **field)


def _instant_text(value: Any) -> Any:
    if isinstance(value, datetime | str):
        return value
    raise ValueError("an instant is an ISO 8601 string with a UTC offset")


Instant = Annotated[AwareDatetime, BeforeValidator(_instant_text)]
"""A timezone-aware instant given as ISO 8601 text (a bare number is not an instant)."""

TOKEN_CHARACTERS = r"^[\x21-\x7e]+$"
"""Header values we read as opaque keys (an idempotency key): visible ASCII, no spaces."""
