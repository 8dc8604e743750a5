"""Time as a dependency: production code asks a `Clock`, tests move a `FakeClock`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, timezone-aware UTC."""
        ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


class FakeClock:
    """A clock that only moves when told to."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime(2026, 1, 1, tzinfo=UTC)

    def now(self) -> datetime:
        return self._now

    def advance(self, delta: timedelta) -> datetime:
        self._now += delta
        return self._now

    def set(self, moment: datetime) -> None:
        self._now = moment


def utc(moment: datetime) -> datetime:
    """Normalise an aware datetime to UTC; naive datetimes are refused (they are bugs)."""
    if moment.tzinfo is None:
        raise ValueError("naive datetime: time must carry a timezone")
    return moment.astimezone(UTC)


def to_rfc3339(moment: datetime) -> str:
    return utc(moment).isoformat().replace("+00:00", "Z")
