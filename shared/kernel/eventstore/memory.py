"""An in-memory EventStore: the fake for fast tests. It passes the same contract suite.

Asyncio-safe because no method awaits between reading and writing its state: on one event
loop every call runs to completion before another starts. Not thread-safe, not durable.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from itertools import islice

from shared.kernel.clock import utc
from shared.kernel.events.canonical import GENESIS_HASH
from shared.kernel.events.envelope import Envelope
from shared.kernel.eventstore.chain import check_new_commit, seal
from shared.kernel.eventstore.port import (
    Backlog,
    Commit,
    ConcurrencyConflict,
    DueTimer,
    DuplicateCausation,
    EventStore,
    Fence,
    LeaseLost,
    NewCommit,
    StoreUnavailable,
    StreamNotFound,
)


@dataclass
class _Lease:
    owner: str
    expires_at: datetime
    epoch: int


class InMemoryEventStore(EventStore):
    def __init__(self) -> None:
        self._commits: dict[int, Commit] = {}
        self._streams: dict[str, list[int]] = {}
        self._by_cause: dict[tuple[str, str], int] = {}  # (handler, causation) → position
        self._timers: dict[str, DueTimer] = {}
        self._timer_ids: set[str] = set()
        self._leases: dict[str, _Lease] = {}
        self._last_position = 0
        self._closed = False

    def _check_open(self) -> None:
        if self._closed:
            raise StoreUnavailable("the in-memory event store is closed")

    def _check_fence(self, fence: Fence | None) -> None:
        if fence is None:
            return
        lease = self._leases.get(fence.name)
        if lease is None or lease.epoch != fence.epoch or lease.owner != fence.owner:
            raise LeaseLost(fence)

    def _head(self, stream_id: str) -> Commit | None:
        positions = self._streams.get(stream_id)
        return self._commits[positions[-1]] if positions else None

    async def append(self, commit: NewCommit) -> Commit:
        self._check_open()
        check_new_commit(commit)
        self._check_fence(commit.fence)
        cause = (commit.handler, commit.causation_id) if commit.causation_id else None
        if cause is not None and cause in self._by_cause:
            raise DuplicateCausation(cause[1], cause[0])
        head = self._head(commit.stream_id)
        head_version = head.last_version if head is not None else 0
        if head_version != commit.expected_version:
            raise ConcurrencyConflict(commit.stream_id, commit.expected_version)
        if any(timer.timer_id in self._timer_ids for timer in commit.timers):
            raise ValueError(f"a timer id of the commit to {commit.stream_id} already exists")

        prev_hash = head.hash if head is not None else GENESIS_HASH
        self._last_position += 1
        hash_ = seal(prev_hash, [event.wire() for event in commit.events])
        stored = commit.stored(self._last_position, prev_hash, hash_)
        self._commits[stored.position] = stored
        self._streams.setdefault(commit.stream_id, []).append(stored.position)
        if cause is not None:
            self._by_cause[cause] = stored.position
        for timer in commit.timers:
            self._timer_ids.add(timer.timer_id)
            self._timers[timer.timer_id] = DueTimer(
                timer_id=timer.timer_id,
                stream_id=commit.stream_id,
                name=timer.name,
                due_at=utc(timer.due_at),
                data=dict(timer.data),
            )
        self._appended()
        return stored

    async def load_stream(self, stream_id: str, after_version: int = 0) -> list[Envelope]:
        commits = await self.stream_commits(stream_id)
        if not commits and after_version == 0:
            raise StreamNotFound(stream_id)
        return [e for c in commits if c.first_version > after_version for e in c.events]

    async def stream_commits(self, stream_id: str) -> list[Commit]:
        self._check_open()
        return [self._commits[position] for position in self._streams.get(stream_id, [])]

    async def read_all(
        self, after_position: int = 0, batch_size: int = 500
    ) -> AsyncIterator[Commit]:
        self._check_open()
        position = after_position
        while True:
            batch = sorted(p for p in self._commits if p > position)[:batch_size]
            if not batch:
                return
            for current in batch:
                yield self._commits[current]
            position = batch[-1]

    async def read_by_stream(self, batch_size: int = 500) -> AsyncIterator[Commit]:
        self._check_open()
        ordered = sorted(self._commits.values(), key=lambda c: (c.stream_id, c.first_version))
        for commit in ordered:
            yield commit

    async def commit_by_causation(self, causation_id: str, handler: str = "") -> Commit | None:
        self._check_open()
        position = self._by_cause.get((handler, causation_id))
        return self._commits[position] if position is not None else None

    async def unpublished(self, limit: int = 500) -> list[Commit]:
        self._check_open()
        pending = (c for _, c in sorted(self._commits.items()) if not c.published)
        return list(islice(pending, limit))

    async def backlog(self, now: datetime, overdue_after: timedelta) -> Backlog:
        self._check_open()
        pending = [c for _, c in sorted(self._commits.items()) if not c.published]
        moment = utc(now)
        due = [timer.due_at for timer in self._timers.values() if timer.due_at <= moment]
        return Backlog(
            unpublished=len(pending),
            oldest_unpublished_at=pending[0].events[0].occurred_at if pending else None,
            timers_due=len(due),
            timers_overdue=sum(1 for at in due if at <= moment - overdue_after),
        )

    async def mark_published(self, positions: Sequence[int], fence: Fence | None = None) -> None:
        self._check_open()
        self._check_fence(fence)
        for position in positions:
            commit = self._commits.get(position)
            if commit is not None:
                self._commits[position] = replace(commit, published=True)

    async def due_timers(self, now: datetime, limit: int = 100) -> list[DueTimer]:
        self._check_open()
        moment = utc(now)
        due = [timer for timer in self._timers.values() if timer.due_at <= moment]
        due.sort(key=lambda timer: (timer.due_at, timer.timer_id))
        return due[:limit]

    async def complete_timer(self, timer_id: str, fence: Fence | None = None) -> None:
        self._check_open()
        self._check_fence(fence)
        self._timers.pop(timer_id, None)

    async def try_lease(self, name: str, owner: str, ttl: timedelta, now: datetime) -> Fence | None:
        self._check_open()
        moment = utc(now)
        lease = self._leases.get(name)
        live = lease is not None and lease.expires_at > moment
        if lease is not None and live and lease.owner != owner:
            return None
        epoch = lease.epoch if lease is not None and live else (lease.epoch if lease else 0) + 1
        self._leases[name] = _Lease(owner=owner, expires_at=moment + ttl, epoch=epoch)
        return Fence(name, owner, epoch)

    async def release_lease(self, name: str, owner: str) -> None:
        self._check_open()
        lease = self._leases.get(name)
        if lease is not None and lease.owner == owner:
            lease.expires_at = datetime.min.replace(tzinfo=lease.expires_at.tzinfo)

    async def close(self) -> None:
        self._closed = True
