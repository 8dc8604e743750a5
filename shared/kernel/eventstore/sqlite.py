"""The SQLite EventStore (WAL): the embedded default, one file per service.

An append is one transaction: `BEGIN IMMEDIATE`, head check, commit row, its timers, `COMMIT`
(or `ROLLBACK` on any error). Under `synchronous=NORMAL` (the default) it runs on the event
loop's thread on a connection of its own, with no `await` inside, so nothing interleaves with
it and no thread hop is paid; it can still never block the loop: WAL commits do not fsync at
NORMAL, the write lock is tried without waiting and retried after an asynchronous sleep while
another connection holds it, and WAL checkpoints (the only fsyncs) run on the writer
connection's thread. Under `synchronous=FULL` appends go through aiosqlite's thread instead.

The stream head is not read when it is already known (a new stream, or a head this store
wrote itself); see `_known_head` for why that is as safe as reading it.

Other writes (outbox marks, timers, leases) run on the aiosqlite writer; reads use a second
connection, and under WAL never wait for a writer. A `:memory:` database has only one
connection, so everything goes through it. `run_in_connection_thread` uses aiosqlite's
`Connection._execute` (the primitive its public methods are built on; pinned below 0.23).

`synchronous=NORMAL` under WAL: a commit survives a crash of the process, and the last
commits before a power loss may be lost (never corrupted). Pass `synchronous="FULL"` to fsync
every commit.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any, Literal, TypeVar

import aiosqlite
from pydantic_core import from_json

from shared.kernel.clock import utc
from shared.kernel.events.canonical import GENESIS_HASH
from shared.kernel.events.envelope import Envelope, canonical_events
from shared.kernel.eventstore.chain import (
    check_new_commit,
    seal_canonical,
    stored_commit,
    stored_envelope,
)
from shared.kernel.eventstore.port import (
    Backlog,
    Commit,
    ConcurrencyConflict,
    DueTimer,
    DuplicateCausation,
    EventStore,
    EventStoreError,
    Fence,
    LeaseLost,
    NewCommit,
    StoreUnavailable,
    StreamNotFound,
)

T = TypeVar("T")
Synchronous = Literal["OFF", "NORMAL", "FULL", "EXTRA"]

BUSY_TIMEOUT_S = 5.0
CHECKPOINT_EVERY_APPENDS = 256
HEAD_CACHE_SIZE = 10_000
log = logging.getLogger(__name__)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)

SCHEMA = """
CREATE TABLE IF NOT EXISTS commits (
    position INTEGER PRIMARY KEY,
    stream_id TEXT NOT NULL,
    first_version INTEGER NOT NULL,
    last_version INTEGER NOT NULL,
    events TEXT NOT NULL,
    topic TEXT NOT NULL,
    partition_key TEXT NOT NULL,
    causation_id TEXT,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL,
    published INTEGER NOT NULL DEFAULT 0,
    handler TEXT NOT NULL DEFAULT '',
    trace_context TEXT NOT NULL DEFAULT '',
    CHECK (last_version >= first_version AND first_version >= 1)
);
CREATE UNIQUE INDEX IF NOT EXISTS commits_stream_version ON commits (stream_id, first_version);
CREATE INDEX IF NOT EXISTS commits_unpublished ON commits (position) WHERE published = 0;
CREATE TABLE IF NOT EXISTS timers (
    timer_id TEXT PRIMARY KEY,
    stream_id TEXT NOT NULL,
    name TEXT NOT NULL,
    due_at INTEGER NOT NULL,
    data TEXT NOT NULL,
    completed INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS timers_due ON timers (due_at, timer_id) WHERE completed = 0;
CREATE TABLE IF NOT EXISTS leases (
    name TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    epoch INTEGER NOT NULL DEFAULT 0
);
"""
# Files written before leases were fenced have no epoch: the column is added (epoch 0).
ADD_EPOCH_COLUMN = "ALTER TABLE leases ADD COLUMN epoch INTEGER NOT NULL DEFAULT 0"
# The de-duplication key is (causation_id, handler). A file written before handlers were part
# of the key has no `handler` column and a unique index on causation_id alone: the column is
# added (its commits keep handler '') and the index replaced. The script is idempotent.
ADD_HANDLER_COLUMN = "ALTER TABLE commits ADD COLUMN handler TEXT NOT NULL DEFAULT ''"
# A file written before commits kept their trace context gets the column ('' for old commits).
ADD_TRACE_COLUMN = "ALTER TABLE commits ADD COLUMN trace_context TEXT NOT NULL DEFAULT ''"
DEDUPE_INDEX = """
DROP INDEX IF EXISTS commits_causation;
CREATE UNIQUE INDEX IF NOT EXISTS commits_dedupe ON commits (causation_id, handler)
    WHERE causation_id IS NOT NULL;
"""

_COMMIT_COLUMNS = (
    "position, stream_id, first_version, events, topic, partition_key, causation_id, "
    "prev_hash, hash, published, handler, trace_context"
)
_HEAD = (
    "SELECT last_version, hash FROM commits WHERE stream_id = ? ORDER BY first_version DESC LIMIT 1"
)
_INSERT_COMMIT = (
    "INSERT INTO commits (stream_id, first_version, last_version, events, topic, partition_key,"
    " causation_id, prev_hash, hash, handler, trace_context)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_INSERT_TIMER = (
    "INSERT INTO timers (timer_id, stream_id, name, due_at, data) VALUES (?, ?, ?, ?, ?)"
)
# The epoch grows when the lease is granted afresh (a takeover, or a renewal after it expired).
_TRY_LEASE = (
    "INSERT INTO leases (name, owner, expires_at, epoch) VALUES (?1, ?2, ?3, 1) "
    "ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, expires_at = excluded.expires_at, "
    "epoch = CASE WHEN leases.owner = excluded.owner AND leases.expires_at > ?4 "
    "THEN leases.epoch ELSE leases.epoch + 1 END "
    "WHERE leases.owner = excluded.owner OR leases.expires_at <= ?4 "
    "RETURNING epoch"
)
_LEASE_EPOCH = "SELECT owner, epoch FROM leases WHERE name = ?"


def to_micros(moment: datetime) -> int:
    """A UTC instant as integer microseconds: exact, and ordered the same as the instants."""
    return (utc(moment) - _EPOCH) // _MICROSECOND


def from_micros(micros: int) -> datetime:
    return _EPOCH + timedelta(microseconds=micros)


def sqlite_path(url: str) -> str:
    """`sqlite:///var/x.db` → `var/x.db`; `sqlite:////abs/x.db` → `/abs/x.db`."""
    prefix = "sqlite:///"
    if not url.startswith(prefix) or len(url) == len(prefix):
        raise ValueError(f"not a SQLite URL (sqlite:///path/to/file.db): {url!r}")
    return url[len(prefix) :]


async def connect(path: str, *, synchronous: Synchronous = "NORMAL") -> aiosqlite.Connection:
    """Open one connection in autocommit mode (transactions are explicit), WAL on files."""
    if path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    try:
        connection = await aiosqlite.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
    except sqlite3.Error as error:
        raise StoreUnavailable(f"cannot open SQLite database {path}: {error}") from error
    try:
        await connection.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        if path != ":memory:":
            await connection.execute("PRAGMA journal_mode = WAL")
        await connection.execute(f"PRAGMA synchronous = {synchronous}")
    except sqlite3.Error as error:
        await connection.close()
        raise StoreUnavailable(f"cannot use SQLite database {path}: {error}") from error
    return connection


async def translated(operation: Awaitable[T]) -> T:
    """Run one driver call; its failures become EventStoreErrors (nothing sqlite leaks)."""
    try:
        return await operation
    except EventStoreError:
        raise
    except sqlite3.IntegrityError:
        raise
    except (sqlite3.Error, ValueError) as error:
        # aiosqlite raises ValueError("Connection closed") once the store is closed.
        raise StoreUnavailable(f"SQLite failed: {error}") from error


def run_in_connection_thread(
    connection: aiosqlite.Connection, function: Callable[[sqlite3.Connection], T]
) -> Awaitable[T]:
    """Run `function(sqlite3_connection)` on the connection's own thread, as one queued unit.

    Raises ValueError("Connection closed") once the connection is closed, like aiosqlite.
    """

    def call() -> T:
        return function(connection._conn)

    result: Awaitable[T] = connection._execute(call)  # type: ignore[no-untyped-call]
    return result


class SQLiteEventStore(EventStore):
    def __init__(
        self,
        writer: aiosqlite.Connection,
        reader: aiosqlite.Connection | None = None,
        appender: sqlite3.Connection | None = None,
    ) -> None:
        """Use `SQLiteEventStore.open(path)`; this takes connections that are already set up."""
        self._writer = writer
        self._reader = reader or writer
        self._appender = appender
        self._point_reader = _point_reader(appender)
        self._heads: OrderedDict[str, tuple[int, str]] = OrderedDict()
        self._queue: list[tuple[_Pending, asyncio.Future[Any]]] = []
        self._flusher: asyncio.Future[None] | None = None
        self._checkpoints = Checkpoints(writer, CHECKPOINT_EVERY_APPENDS)

    @classmethod
    async def open(cls, path: str, *, synchronous: Synchronous = "NORMAL") -> SQLiteEventStore:
        writer = await connect(path, synchronous=synchronous)
        try:
            await translated(writer.executescript(SCHEMA))
            columns = await translated(writer.execute_fetchall("PRAGMA table_info(commits)"))
            names = {column[1] for column in columns}
            if "handler" not in names:
                await translated(writer.execute(ADD_HANDLER_COLUMN))
            if "trace_context" not in names:
                await translated(writer.execute(ADD_TRACE_COLUMN))
            columns = await translated(writer.execute_fetchall("PRAGMA table_info(leases)"))
            if "epoch" not in {column[1] for column in columns}:
                await translated(writer.execute(ADD_EPOCH_COLUMN))
            await translated(writer.executescript(DEDUPE_INDEX))
            reader = appender = None
            if path != ":memory:":
                reader = await connect(path, synchronous=synchronous)
                await translated(reader.execute("PRAGMA query_only = 1"))
                if synchronous in ("OFF", "NORMAL"):
                    appender = _appender(path, synchronous)
        except BaseException:
            await writer.close()
            raise
        return cls(writer, reader, appender)

    # -- writing -------------------------------------------------------------------------

    async def _write(self, sql: str, parameters: Sequence[Any]) -> list[Any]:
        """One autocommit statement on the writer (atomic on its own)."""
        return list(await translated(self._writer.execute_fetchall(sql, parameters)))

    async def append(self, commit: NewCommit) -> Commit:
        check_new_commit(commit)
        canonical = canonical_events(commit.events)
        first_version = commit.expected_version + 1
        last_version = commit.expected_version + len(commit.events)
        timers = [
            (
                timer.timer_id,
                commit.stream_id,
                timer.name,
                to_micros(timer.due_at),
                json.dumps(timer.data),
            )
            for timer in commit.timers
        ]

        pending = _Pending(commit, canonical, timers, self._known_head(commit))
        try:
            if self._appender is not None:
                position, prev_hash, hash_ = _outcome(
                    (await self._append_here(partial(_write_group, [pending])))[0]
                )
            else:
                position, prev_hash, hash_ = await self._append_in_group(pending)
        except sqlite3.IntegrityError as error:
            self._heads.pop(commit.stream_id, None)
            raise _integrity_error(commit, error) from error
        except ConcurrencyConflict:
            self._heads.pop(commit.stream_id, None)
            raise
        self._remember_head(commit.stream_id, last_version, hash_)
        self._appended()
        return stored_commit(
            position,
            commit.stream_id,
            first_version,
            tuple(commit.events),
            commit.topic,
            commit.partition_key,
            commit.causation_id,
            prev_hash,
            hash_,
            False,
            commit.handler,
            commit.trace_context,
        )

    async def _append_in_group(self, pending: _Pending) -> tuple[int, str, str]:
        """Group commit, where each commit is its own fsync (`synchronous=FULL`): appends that
        arrive while a transaction is being written on the writer's thread wait, and the next
        transaction takes all of them, one fsync for the group. Each commit of a group is
        written in a savepoint, so a conflict or a duplicate fails its own append only.

        A caller cancelled while its append waits in the queue may still find it written (as
        with any write whose answer was lost): commands and reactions are idempotent."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[tuple[int, str, str] | BaseException] = loop.create_future()
        self._queue.append((pending, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.ensure_future(self._flush_groups())
        return _outcome(await asyncio.shield(future))

    async def _flush_groups(self) -> None:
        while self._queue:
            group, self._queue = self._queue, []
            try:
                outcomes = await translated(
                    run_in_connection_thread(
                        self._writer, partial(_write_group, [p for p, _ in group])
                    )
                )
            except BaseException as error:
                for _, future in group:
                    if not future.done():
                        future.set_exception(error)
                if not isinstance(error, Exception):
                    raise
                continue
            for (_, future), outcome in zip(group, outcomes, strict=True):
                if not future.done():
                    future.set_result(outcome)

    def _known_head(self, commit: NewCommit) -> str | None:
        """The previous hash when it is known without reading: a new stream's, or the head
        this store wrote itself. Safe even if another connection appended since: every commit
        after version v has first_version v+1, so the insert then violates the unique
        (stream_id, first_version) index and the append is a ConcurrencyConflict; a head
        never moves back, and the hash of the commit ending at v never changes."""
        if commit.expected_version == 0:
            return GENESIS_HASH
        head = self._heads.get(commit.stream_id)
        if head is not None and head[0] == commit.expected_version:
            return head[1]
        return None

    def _remember_head(self, stream_id: str, version: int, hash_: str) -> None:
        self._heads[stream_id] = (version, hash_)
        self._heads.move_to_end(stream_id)
        if len(self._heads) > HEAD_CACHE_SIZE:
            self._heads.popitem(last=False)

    async def _append_here(self, transaction: Callable[[sqlite3.Connection], T]) -> T:
        """Run the append transaction on this thread: no await between BEGIN and COMMIT, so
        no other coroutine can interleave, and no thread hop (most of an append's cost).

        Only where nothing in it can block: `synchronous=NORMAL` under WAL does not fsync a
        commit, the write lock is tried without waiting (busy_timeout 0) and, while another
        connection holds it, retried after an asynchronous sleep, and WAL checkpoints (the
        only fsyncs) run on the writer connection's own thread.
        """
        assert self._appender is not None
        result = await run_on_loop(self._appender, transaction)
        self._checkpoints.wrote()
        return result

    async def _write_fenced(self, sql: str, parameters: Sequence[Any], fence: Fence | None) -> None:
        """One statement, in one transaction with the check that `fence` still holds."""
        if fence is None:
            await self._write(sql, parameters)
            return

        def transaction(connection: sqlite3.Connection) -> None:
            connection.execute("BEGIN IMMEDIATE")
            try:
                check_fence(connection, fence)
                connection.execute(sql, parameters)
                connection.execute("COMMIT")
            except BaseException:
                if connection.in_transaction:
                    connection.execute("ROLLBACK")
                raise

        await translated(run_in_connection_thread(self._writer, transaction))

    async def mark_published(self, positions: Sequence[int], fence: Fence | None = None) -> None:
        if positions:
            await self._write_fenced(
                "UPDATE commits SET published = 1 "
                "WHERE position IN (SELECT value FROM json_each(?))",
                (json.dumps(list(positions)),),
                fence,
            )

    async def complete_timer(self, timer_id: str, fence: Fence | None = None) -> None:
        await self._write_fenced(
            "UPDATE timers SET completed = 1 WHERE timer_id = ?", (timer_id,), fence
        )

    async def try_lease(self, name: str, owner: str, ttl: timedelta, now: datetime) -> Fence | None:
        moment = to_micros(now)
        rows = await self._write(_TRY_LEASE, (name, owner, moment + ttl // _MICROSECOND, moment))
        return Fence(name, owner, int(rows[0][0])) if rows else None

    async def release_lease(self, name: str, owner: str) -> None:
        await self._write(
            "UPDATE leases SET expires_at = 0 WHERE name = ? AND owner = ?", (name, owner)
        )

    # -- reading -------------------------------------------------------------------------

    async def _read(self, sql: str, parameters: Sequence[Any]) -> list[Any]:
        return list(await translated(self._reader.execute_fetchall(sql, parameters)))

    async def _read_point(self, sql: str, parameters: Sequence[Any]) -> list[Any]:
        """A short indexed read (one stream, one causation) on the event loop's thread.

        Where appends run on the loop (`synchronous=NORMAL`), so do these reads, on a read-only
        connection of their own: a WAL reader never waits for a writer, the query touches a few
        index pages, and the thread hop it saves was a large part of every reaction's cost
        (the load of the aggregate it reacts on). A reader that meets a lock anyway (a WAL
        recovery) goes through the thread instead."""
        if self._point_reader is not None:
            try:
                return self._point_reader.execute(sql, parameters).fetchall()
            except sqlite3.OperationalError as error:
                if not _is_busy(error):
                    raise StoreUnavailable(f"SQLite failed: {error}") from error
            except (sqlite3.ProgrammingError, ValueError) as error:
                raise StoreUnavailable(f"SQLite failed: {error}") from error
        return await self._read(sql, parameters)

    async def _commits(self, where: str, parameters: Sequence[Any]) -> list[Commit]:
        rows = await self._read(f"SELECT {_COMMIT_COLUMNS} FROM commits {where}", parameters)
        return [_commit(row) for row in rows]

    async def load_stream(self, stream_id: str, after_version: int = 0) -> list[Envelope]:
        rows = await self._read_point(
            "SELECT events FROM commits WHERE stream_id = ? AND first_version > ? "
            "ORDER BY first_version",
            (stream_id, after_version),
        )
        if not rows and after_version == 0:
            raise StreamNotFound(stream_id)
        return [stored_envelope(wire) for (events,) in rows for wire in _decode(events)]

    async def stream_commits(self, stream_id: str) -> list[Commit]:
        return await self._commits("WHERE stream_id = ? ORDER BY first_version", (stream_id,))

    async def read_all(
        self, after_position: int = 0, batch_size: int = 500
    ) -> AsyncIterator[Commit]:
        position = after_position
        while True:
            rows = await self._read(
                f"SELECT {_COMMIT_COLUMNS} FROM commits WHERE position > ? "
                "ORDER BY position LIMIT ?",
                (position, batch_size),
            )
            # Decoded one at a time as the caller takes them, not a batch ahead: a commit the
            # caller has dropped is freed at once, so the cycle collector, which runs every
            # few hundred allocations, never has a whole batch of envelopes to traverse.
            for row in rows:
                yield _commit(row)
            if len(rows) < batch_size:
                return
            position = rows[-1][0]

    async def read_all_wire(
        self, batch_size: int = 500
    ) -> AsyncIterator[tuple[str, list[dict[str, Any]]]]:
        """The stored JSON decoded and nothing more (no envelope, no commit object, the time
        left as its stored text): the replay reads a third faster than through `read_all`."""
        position = 0
        while True:
            rows = await self._read(
                "SELECT position, stream_id, events FROM commits WHERE position > ? "
                "ORDER BY position LIMIT ?",
                (position, batch_size),
            )
            for _, stream_id, events in rows:
                yield stream_id, _decode(events)
            if len(rows) < batch_size:
                return
            position = rows[-1][0]

    async def read_by_stream(self, batch_size: int = 500) -> AsyncIterator[Commit]:
        after: tuple[str, int] = ("", 0)
        while True:  # keyset pages over the (stream_id, first_version) unique index
            rows = await self._read(
                f"SELECT {_COMMIT_COLUMNS} FROM commits WHERE (stream_id, first_version) > (?, ?) "
                "ORDER BY stream_id, first_version LIMIT ?",
                (*after, batch_size),
            )
            for row in rows:
                yield _commit(row)
            if len(rows) < batch_size:
                return
            after = (rows[-1][1], rows[-1][2])

    async def commit_by_causation(self, causation_id: str, handler: str = "") -> Commit | None:
        rows = await self._read_point(
            f"SELECT {_COMMIT_COLUMNS} FROM commits WHERE causation_id = ? AND handler = ?",
            (causation_id, handler),
        )
        found = [_commit(row) for row in rows]
        return found[0] if found else None

    async def unpublished(self, limit: int = 500) -> list[Commit]:
        return await self._commits("WHERE published = 0 ORDER BY position LIMIT ?", (limit,))

    async def backlog(self, now: datetime, overdue_after: timedelta) -> Backlog:
        ((unpublished,),) = await self._read("SELECT COUNT(*) FROM commits WHERE published = 0", ())
        oldest = await self.unpublished(limit=1) if unpublished else []
        ((due, overdue),) = await self._read(
            "SELECT COUNT(*), COALESCE(SUM(due_at <= ?), 0) FROM timers "
            "WHERE completed = 0 AND due_at <= ?",
            (to_micros(now - overdue_after), to_micros(now)),
        )
        return Backlog(
            unpublished=unpublished,
            oldest_unpublished_at=oldest[0].events[0].occurred_at if oldest else None,
            timers_due=due,
            timers_overdue=overdue,
        )

    async def due_timers(self, now: datetime, limit: int = 100) -> list[DueTimer]:
        rows = await self._read(
            "SELECT timer_id, stream_id, name, due_at, data FROM timers "
            "WHERE completed = 0 AND due_at <= ? ORDER BY due_at, timer_id LIMIT ?",
            (to_micros(now), limit),
        )
        return [
            DueTimer(
                timer_id=timer_id,
                stream_id=stream_id,
                name=name,
                due_at=from_micros(due_at),
                data=json.loads(data),
            )
            for timer_id, stream_id, name, due_at, data in rows
        ]

    async def close(self) -> None:
        await self._checkpoints.finish()
        if self._appender is not None:
            self._appender.close()
        if self._point_reader is not None:
            self._point_reader.close()
        if self._reader is not self._writer:
            await self._reader.close()
        await self._writer.close()


def _decode(events: str) -> Any:
    """A commit's stored events. pydantic-core's parser rather than orjson's, which is faster
    but reads integers beyond 64 bits as floats; caching only the keys (the same ten envelope
    keys in every event) is a little faster than also caching short values."""
    return from_json(events, cache_strings="keys")


def _commit(row: Any) -> Commit:
    (
        position,
        stream_id,
        first_version,
        events,
        topic,
        key,
        causation,
        prev,
        hash_,
        pub,
        by,
        tc,
    ) = row
    return stored_commit(
        position,
        stream_id,
        first_version,
        tuple([stored_envelope(wire) for wire in _decode(events)]),
        topic,
        key,
        causation,
        prev,
        hash_,
        bool(pub),
        by,
        tc,
    )


def _appender(path: str, synchronous: Synchronous) -> sqlite3.Connection:
    """The connection appends run on, on the event loop's thread (see `_append_here`)."""
    try:
        connection = sqlite3.connect(path, timeout=0, isolation_level=None)
        connection.execute("PRAGMA busy_timeout = 0")
        connection.execute(f"PRAGMA synchronous = {synchronous}")
        connection.execute("PRAGMA wal_autocheckpoint = 0")  # checkpoints run off the loop
    except sqlite3.Error as error:
        raise StoreUnavailable(f"cannot open SQLite database {path}: {error}") from error
    return connection


@dataclass(frozen=True)
class _Pending:
    """A commit ready to write: its canonical events, its timer rows, its head if known."""

    commit: NewCommit
    canonical: bytes
    timers: list[tuple[str, str, str, int, str]]
    known_head: str | None


def _write_group(
    group: Sequence[_Pending], connection: sqlite3.Connection
) -> list[tuple[int, str, str] | BaseException]:
    """One transaction for the group; each commit in a savepoint of its own. Returns, per
    commit, (position, prev_hash, hash) or the error that refused it (a conflict, a duplicate);
    an error of the transaction itself (a busy lock, a full disk) is raised for all."""
    outcomes: list[tuple[int, str, str] | BaseException] = []
    written: dict[str, tuple[int, str]] = {}  # heads this group wrote
    alone = len(group) == 1  # a refusal then just rolls the transaction back: no savepoint
    connection.execute("BEGIN IMMEDIATE")
    try:
        for pending in group:
            commit = pending.commit
            if alone:
                outcomes.append(_write_one(connection, pending, None))
                break
            connection.execute("SAVEPOINT one_commit")
            try:
                outcome = _write_one(connection, pending, written.get(commit.stream_id))
            except (sqlite3.IntegrityError, ConcurrencyConflict, LeaseLost) as refused:
                connection.execute("ROLLBACK TO one_commit")
                connection.execute("RELEASE one_commit")
                outcomes.append(refused)
                continue
            connection.execute("RELEASE one_commit")
            written[commit.stream_id] = (commit.expected_version + len(commit.events), outcome[2])
            outcomes.append(outcome)
        connection.execute("COMMIT")
    except BaseException:
        if connection.in_transaction:
            connection.execute("ROLLBACK")
        raise
    return outcomes


def _write_one(
    connection: sqlite3.Connection, pending: _Pending, written_head: tuple[int, str] | None
) -> tuple[int, str, str]:
    commit = pending.commit
    if commit.fence is not None:
        check_fence(connection, commit.fence)
    if written_head is not None and written_head[0] == commit.expected_version:
        prev_hash = written_head[1]
    elif pending.known_head is not None:
        prev_hash = pending.known_head
    else:
        head = connection.execute(_HEAD, (commit.stream_id,)).fetchone()
        head_version, prev_hash = head if head is not None else (0, GENESIS_HASH)
        if head_version != commit.expected_version:
            raise ConcurrencyConflict(commit.stream_id, commit.expected_version)
    hash_ = seal_canonical(prev_hash, pending.canonical)
    position = connection.execute(
        _INSERT_COMMIT,
        (
            commit.stream_id,
            commit.expected_version + 1,
            commit.expected_version + len(commit.events),
            pending.canonical.decode(),
            commit.topic,
            commit.partition_key,
            commit.causation_id,
            prev_hash,
            hash_,
            commit.handler,
            commit.trace_context,
        ),
    ).lastrowid
    if pending.timers:
        connection.executemany(_INSERT_TIMER, pending.timers)
    assert position is not None
    return position, prev_hash, hash_


def check_fence(connection: sqlite3.Connection, fence: Fence) -> None:
    """Inside a write transaction: raise LeaseLost unless the lease is still at `fence`."""
    row = connection.execute(_LEASE_EPOCH, (fence.name,)).fetchone()
    if row is None or (row[0], row[1]) != (fence.owner, fence.epoch):
        raise LeaseLost(fence)


def _outcome(outcome: tuple[int, str, str] | BaseException) -> tuple[int, str, str]:
    if isinstance(outcome, BaseException):
        raise outcome
    return outcome


async def run_on_loop(connection: sqlite3.Connection, work: Callable[[sqlite3.Connection], T]) -> T:
    """`work(connection)` on the event loop's thread, for short statements that cannot block:
    under WAL at `synchronous=NORMAL` a write does not fsync, the write lock is tried without
    waiting (the connection's busy_timeout is 0) and, while another connection holds it,
    tried again after an asynchronous sleep, up to BUSY_TIMEOUT_S; integrity errors pass."""
    delay, waited = 0.0005, 0.0
    while True:
        try:
            return work(connection)
        except sqlite3.OperationalError as error:
            if not _is_busy(error) or waited >= BUSY_TIMEOUT_S:
                raise StoreUnavailable(f"SQLite failed: {error}") from error
        except (sqlite3.ProgrammingError, ValueError) as error:
            raise StoreUnavailable(f"SQLite failed: {error}") from error
        await asyncio.sleep(delay)
        waited += delay
        delay = min(delay * 2, 0.05)


class Checkpoints:
    """WAL checkpoints for writes made on the loop's thread (whose connections never
    checkpoint): every `every` writes, a PASSIVE checkpoint on `connection`'s own thread."""

    def __init__(
        self, connection: aiosqlite.Connection, every: int, lock: asyncio.Lock | None = None
    ) -> None:
        self._connection, self._every, self._lock = connection, every, lock
        self._writes = 0
        self._running: set[asyncio.Task[None]] = set()

    def wrote(self) -> None:
        self._writes += 1
        if self._writes >= self._every:
            self._writes = 0
            task = asyncio.create_task(self._checkpoint())
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _checkpoint(self) -> None:
        try:
            if self._lock is None:
                await run_in_connection_thread(self._connection, _checkpoint_wal)
            else:
                async with self._lock:
                    await run_in_connection_thread(self._connection, _checkpoint_wal)
        except (sqlite3.Error, ValueError) as error:  # the next one catches up
            log.warning("WAL checkpoint failed: %s", error)

    async def finish(self) -> None:
        if self._running:
            await asyncio.gather(*self._running, return_exceptions=True)


def _checkpoint_wal(connection: sqlite3.Connection) -> None:
    """A PASSIVE checkpoint whose statement is finished before the thread takes its next
    call. (Through aiosqlite's `execute` the pragma's statement stayed open until the loop
    thread dropped the cursor; a fenced transaction queued behind it on the same thread then
    failed to commit: "SQL statements in progress".)"""
    connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()


def loop_connection(path: str, synchronous: Synchronous) -> sqlite3.Connection:
    """A connection for `run_on_loop`: never waits for a lock, never checkpoints by itself
    (its owner checkpoints off the loop, the only fsyncs at NORMAL)."""
    return _appender(path, synchronous)


def _point_reader(appender: sqlite3.Connection | None) -> sqlite3.Connection | None:
    """A read-only connection for `_read_point`, beside the loop's appender (None without)."""
    if appender is None:
        return None
    path = appender.execute("PRAGMA database_list").fetchone()[2]
    try:
        connection = sqlite3.connect(f"{Path(path).as_uri()}?mode=ro", uri=True, timeout=0)
        connection.execute("PRAGMA busy_timeout = 0")
    except sqlite3.Error as error:
        raise StoreUnavailable(f"cannot open SQLite database {path}: {error}") from error
    return connection


def _is_busy(error: sqlite3.OperationalError) -> bool:
    return getattr(error, "sqlite_errorcode", None) in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


def _integrity_error(commit: NewCommit, error: sqlite3.IntegrityError) -> Exception:
    message = str(error)
    if "commits.causation_id" in message and commit.causation_id is not None:
        return DuplicateCausation(commit.causation_id, commit.handler)
    if "commits.stream_id" in message:
        return ConcurrencyConflict(commit.stream_id, commit.expected_version)
    if "timers.timer_id" in message:
        return ValueError(f"a timer id of the commit to {commit.stream_id} already exists")
    return EventStoreError(f"SQLite refused the commit to {commit.stream_id}: {message}")
