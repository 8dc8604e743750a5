"""The event store port: a small interface every storage adapter implements.

One *commit* per command: the command's events, its outbox flag (`published`),
its causation key, the timers it schedules and its hash-chain link are stored in one atomic
write. Optimistic concurrency on (stream_id, version). Adapters translate driver errors into
the errors below; nothing from aiosqlite or pymongo leaks through this port.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from shared.kernel.events.envelope import Envelope


class EventStoreError(Exception):
    """Base of every error the store raises."""


class ConcurrencyConflict(EventStoreError):
    def __init__(self, stream_id: str, expected_version: int) -> None:
        super().__init__(f"stream {stream_id} is no longer at version {expected_version}")
        self.stream_id = stream_id
        self.expected_version = expected_version


class DuplicateCausation(EventStoreError):
    """This handler already stored a commit for this cause: the cause was already handled."""

    def __init__(self, causation_id: str, handler: str = "") -> None:
        by = f" by {handler}" if handler else ""
        super().__init__(f"causation {causation_id} was already handled{by}")
        self.causation_id = causation_id
        self.handler = handler


class StreamNotFound(EventStoreError):
    def __init__(self, stream_id: str) -> None:
        super().__init__(f"no stream {stream_id}")
        self.stream_id = stream_id


class StoreUnavailable(EventStoreError):
    """The database could not be reached or failed; the write may be retried."""


class LeaseLost(EventStoreError):
    """A fenced write was refused: its lease has moved to a later epoch (another holder took
    it over while this one was paused or slow). Nothing of the write was stored."""

    def __init__(self, fence: Fence) -> None:
        super().__init__(
            f"lease {fence.name} of {fence.owner} at epoch {fence.epoch} was taken over"
        )
        self.fence = fence


@dataclass(frozen=True)
class Fence:
    """A lease as held when it was granted: its name, its holder and its epoch.

    The epoch grows each time the lease is granted afresh (a takeover, or a renewal after it
    had expired), never while one holder keeps renewing it in time. A write that carries a
    fence is stored only while the lease is still at that epoch, checked in the same
    atomic write (the fencing token of Kleppmann's "How to do distributed locking")."""

    name: str
    owner: str
    epoch: int


@dataclass(frozen=True)
class NewTimer:
    """A durable timer to store with a commit. `timer_id` becomes the causation id of its effect."""

    timer_id: str
    name: str
    due_at: datetime
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class NewCommit:
    """What one command or one reaction stores.

    The de-duplication key is (`handler`, `causation_id`): a handler that already stored a
    commit for a cause is refused with DuplicateCausation, while a second handler reacting to
    the same message is not (the message-and-subscriber key of Eventuate's duplicate detector).
    Commits without a causation id (plain commands) never collide.
    """

    stream_id: str
    expected_version: int  # 0 for a new stream
    events: Sequence[Envelope]  # stream_version expected_version+1, +2, ...
    topic: str
    partition_key: str
    causation_id: str | None = None
    timers: Sequence[NewTimer] = ()
    handler: str = ""  # who handled `causation_id`: a reaction's name, "" for a command
    trace_context: str = ""  # W3C traceparent of the span that stored it ("" when not traced)
    fence: Fence | None = None  # stored only while this lease is at this epoch (a timer's effect)

    def stored(self, position: int, prev_hash: str, hash_: str) -> Commit:
        """The commit as a store holds it once written at `position`, sealed after `prev_hash`."""
        return Commit(
            position=position,
            stream_id=self.stream_id,
            first_version=self.expected_version + 1,
            events=tuple(self.events),
            topic=self.topic,
            partition_key=self.partition_key,
            causation_id=self.causation_id,
            prev_hash=prev_hash,
            hash=hash_,
            published=False,
            handler=self.handler,
            trace_context=self.trace_context,
        )


@dataclass(frozen=True)
class Commit:
    position: int  # store order: strictly increasing, not necessarily contiguous
    stream_id: str
    first_version: int
    events: tuple[Envelope, ...]
    topic: str
    partition_key: str
    causation_id: str | None
    prev_hash: str
    hash: str
    published: bool
    handler: str = ""
    trace_context: str = ""  # kept so the relay publishes in the trace that stored it

    @property
    def last_version(self) -> int:
        return self.first_version + len(self.events) - 1


@dataclass(frozen=True)
class DueTimer:
    timer_id: str
    stream_id: str
    name: str
    due_at: datetime
    data: dict[str, Any]
    fence: Fence | None = None  # the scheduler's lease when it fired: its effect carries it


@dataclass(frozen=True)
class Backlog:
    """What a store still has to do, for metrics and readiness: commits the broker has not
    acknowledged (all of them, uncapped), when the oldest of them was recorded, and the
    timers that are due now and those due longer ago than a threshold (overdue)."""

    unpublished: int
    oldest_unpublished_at: datetime | None
    timers_due: int
    timers_overdue: int


class EventStore(ABC):
    _append_listeners: tuple[Callable[[], None], ...] = ()

    def on_append(self, listener: Callable[[], None]) -> None:
        """Call `listener()` (on the loop, without awaiting) after every commit this store
        object appends: the outbox relay wakes on it instead of waiting for its next poll.
        Commits appended by other processes are still found by polling."""
        self._append_listeners = (*self._append_listeners, listener)

    def _appended(self) -> None:
        """Adapters call this once a commit is durable (the end of `append`)."""
        for listener in self._append_listeners:
            listener()

    @abstractmethod
    async def append(self, commit: NewCommit) -> Commit:
        """Store a commit atomically. Raises ConcurrencyConflict, DuplicateCausation, and
        LeaseLost when `commit.fence` is no longer the lease's epoch. Tells `on_append`
        listeners once it is stored."""

    @abstractmethod
    async def load_stream(self, stream_id: str, after_version: int = 0) -> list[Envelope]:
        """The events of a stream after `after_version` (a commit boundary), in version order.

        Raises StreamNotFound if the stream has no event at all (`after_version` 0); a caller
        that already holds the stream up to `after_version` gets [] when nothing is newer."""

    @abstractmethod
    async def stream_commits(self, stream_id: str) -> list[Commit]:
        """Every commit of a stream in version order (for audit); [] if none."""

    @abstractmethod
    def read_all(self, after_position: int = 0, batch_size: int = 500) -> AsyncIterator[Commit]:
        """Every commit once, in store order."""

    async def read_all_wire(
        self, batch_size: int = 500
    ) -> AsyncIterator[tuple[str, list[dict[str, Any]]]]:
        """Every commit once, in store order, as (stream id, its events' wire forms): for bulk
        readers that fold the data and never need `Envelope` objects (the replay). An adapter
        may override it to skip building envelopes; the wire forms are the same either way."""
        async for commit in self.read_all(batch_size=batch_size):
            yield commit.stream_id, [envelope.wire() for envelope in commit.events]

    @abstractmethod
    def read_by_stream(self, batch_size: int = 500) -> AsyncIterator[Commit]:
        """Every commit once, stream after stream (in stream id order), each stream's commits in
        version order: a reader checking one stream at a time holds only that stream (the
        constant-memory verify)."""

    @abstractmethod
    async def commit_by_causation(self, causation_id: str, handler: str = "") -> Commit | None:
        """The commit `handler` stored for `causation_id`, if any."""

    @abstractmethod
    async def unpublished(self, limit: int = 500) -> list[Commit]:
        """Commits not yet acknowledged by the broker, in store order."""

    @abstractmethod
    async def mark_published(self, positions: Sequence[int], fence: Fence | None = None) -> None:
        """Set the commits' outbox flag; with a fence, only while the lease is at its epoch
        (else LeaseLost, nothing marked)."""

    @abstractmethod
    async def backlog(self, now: datetime, overdue_after: timedelta) -> Backlog:
        """Count unpublished commits and due timers (a timer due before `now - overdue_after`
        is overdue too); the oldest unpublished commit's time is its first event's."""

    @abstractmethod
    async def due_timers(self, now: datetime, limit: int = 100) -> list[DueTimer]:
        """Timers due at `now` that were not completed, earliest first."""

    @abstractmethod
    async def complete_timer(self, timer_id: str, fence: Fence | None = None) -> None:
        """Mark a timer done; with a fence, only while the lease is at its epoch."""

    @abstractmethod
    async def try_lease(self, name: str, owner: str, ttl: timedelta, now: datetime) -> Fence | None:
        """Take or renew the named lease: its fence (with the epoch to write under), or None
        while another owner holds an unexpired one."""

    @abstractmethod
    async def release_lease(self, name: str, owner: str) -> None:
        """Let the lease expire now (its epoch is kept, so an older fence stays refused)."""

    @abstractmethod
    async def close(self) -> None: ...
