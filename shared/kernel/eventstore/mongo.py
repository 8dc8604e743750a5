"""The MongoDB EventStore: one document per commit, so every append is one atomic write.

It takes a database object with the await-style API: PyMongo's `AsyncMongoClient(...)[name]`
in deployment, mongomock-motor's database (a fake, for query shapes) in tests. No
multi-document transactions are needed: a commit document carries its events, its outbox flag
(`published`), its causation key and its timers.

Concurrency: a unique index on (stream_id, first_version) plus a head check before the insert.
Two writers that read the same head both try to insert the same first_version and one of them
hits the index. A writer whose expected_version was never the head is refused by the check.

Positions come from a counter document incremented with `$inc`. They are strictly increasing
per insert, but they may have gaps (a conflicting append consumes one), and under concurrency
they may become visible out of order: position 8 can be readable a moment before position 7.
A reader that must not skip commits (the outbox relay) reads `unpublished()`, which has no
cursor to move past a late commit.

Fencing: a fenced write (a timer's effect, the relay's marks) first advances the lease
document only if it is still at the fence's epoch (`$inc` of `fenced_writes`, refused with
LeaseLost otherwise), then writes. Without a multi-document transaction these are two atomic
writes, not one: a takeover landing between them is not caught. The window is one round trip;
a timer's effect is still stored once (its causation key), and the relay's marks are
idempotent. (SQLite and the in-memory store check the epoch inside the same write.)

Time: datetimes are stored as BSON dates (UTC, millisecond precision). A timer's due time is
rounded up to the next millisecond, so it never fires early.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo import ASCENDING, DESCENDING, ReturnDocument, WriteConcern
from pymongo.errors import DuplicateKeyError, PyMongoError
from pymongo.read_concern import ReadConcern

from shared.kernel.clock import utc
from shared.kernel.events.canonical import GENESIS_HASH
from shared.kernel.events.envelope import Envelope
from shared.kernel.eventstore.chain import check_new_commit, seal, stored_envelope
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

STREAM_INDEX = "commits_stream_version"
DEDUPE_INDEX = "commits_dedupe"
OLD_CAUSATION_INDEX = "commits_causation"  # unique on causation_id alone, before handlers
TIMER_ID_INDEX = "commits_timer_ids"
COUNTER_ID = "commit_position"


@contextmanager
def translated_errors() -> Iterator[None]:
    """PyMongo failures become StoreUnavailable: nothing from the driver leaks through the port."""
    try:
        yield
    except DuplicateKeyError:
        raise
    except PyMongoError as error:
        raise StoreUnavailable(f"MongoDB failed: {error}") from error


def majority(database: Any, name: str) -> Any:
    """A collection with write concern and read concern `majority`, both set explicitly."""
    return database.get_collection(
        name, write_concern=WriteConcern("majority"), read_concern=ReadConcern("majority")
    )


def aware(moment: datetime) -> datetime:
    """BSON dates come back naive (UTC) unless the client was built with tz_aware=True."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def bson_time(moment: datetime, *, round_up: bool = False) -> datetime:
    """An aware instant as BSON stores it: UTC, whole milliseconds."""
    moment = utc(moment)
    truncated = moment.replace(microsecond=moment.microsecond // 1000 * 1000)
    if round_up and truncated != moment:
        truncated += timedelta(milliseconds=1)
    return truncated


async def aggregate(collection: Any, pipeline: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """PyMongo's async `aggregate` is a coroutine; Motor-style (mongomock-motor) gives a cursor."""
    cursor = collection.aggregate(pipeline)
    if inspect.isawaitable(cursor):
        cursor = await cursor
    documents: list[dict[str, Any]] = await cursor.to_list(None)
    return documents


def duplicate_key_on(error: DuplicateKeyError, index: str, field: str) -> bool:
    """Which unique index refused the write: MongoDB names it; mongomock gives the key pattern."""
    details = error.details or {}
    pattern = details.get("keyPattern") or {}
    return index in str(details.get("errmsg", error)) or field in pattern


class MongoEventStore(EventStore):
    def __init__(self, database: Any, *, client: Any = None) -> None:
        """Use `await MongoEventStore.open(database)`; `client`, if given, is closed by `close`."""
        self._database = database
        self._client = client
        self._commits = majority(database, "commits")
        self._counters = majority(database, "counters")
        self._leases = majority(database, "leases")
        self._closed = False

    @classmethod
    async def open(cls, database: Any, *, client: Any = None) -> MongoEventStore:
        store = cls(database, client=client)
        await store.create_indexes()
        return store

    async def create_indexes(self) -> None:
        with translated_errors():
            await self._commits.create_index(
                [("stream_id", ASCENDING), ("first_version", ASCENDING)],
                unique=True,
                name=STREAM_INDEX,
            )
            # The de-duplication key is (causation_id, handler). A unique index treats a missing
            # or null field as a value: without the partial filter, the second commit without a
            # causation id would collide with the first.
            if OLD_CAUSATION_INDEX in await self._commits.index_information():
                await self._commits.drop_index(OLD_CAUSATION_INDEX)
            await self._commits.create_index(
                [("causation_id", ASCENDING), ("handler", ASCENDING)],
                unique=True,
                name=DEDUPE_INDEX,
                partialFilterExpression={"causation_id": {"$type": "string"}},
            )
            await self._commits.create_index(
                "timer_ids",
                unique=True,
                name=TIMER_ID_INDEX,
                partialFilterExpression={"timer_ids": {"$type": "string"}},
            )
            await self._commits.create_index(
                "pending_timers.due_at", name="commits_pending_timers_due"
            )
            await self._commits.create_index(
                [("published", ASCENDING), ("_id", ASCENDING)], name="commits_unpublished"
            )

    def _check_open(self) -> None:
        if self._closed:
            raise StoreUnavailable("the MongoDB event store is closed")

    async def _check_fence(self, fence: Fence | None) -> None:
        if fence is None:
            return
        found = await self._leases.find_one_and_update(
            {"_id": fence.name, "owner": fence.owner, "epoch": fence.epoch},
            {"$inc": {"fenced_writes": 1}},
        )
        if found is None:
            raise LeaseLost(fence)

    async def append(self, commit: NewCommit) -> Commit:
        self._check_open()
        check_new_commit(commit)
        wires = [event.wire() for event in commit.events]
        with translated_errors():
            await self._check_fence(commit.fence)
            head = await self._commits.find_one(
                {"stream_id": commit.stream_id},
                projection={"last_version": True, "hash": True},
                sort=[("first_version", DESCENDING)],
            )
            head_version = head["last_version"] if head is not None else 0
            if head_version != commit.expected_version:
                raise ConcurrencyConflict(commit.stream_id, commit.expected_version)
            prev_hash = head["hash"] if head is not None else GENESIS_HASH
            counter = await self._counters.find_one_and_update(
                {"_id": COUNTER_ID},
                {"$inc": {"value": 1}},
                upsert=True,
                return_document=ReturnDocument.AFTER,
            )
            stored = commit.stored(int(counter["value"]), prev_hash, seal(prev_hash, wires))
            try:
                await self._commits.insert_one(_document(stored, wires, commit))
            except DuplicateKeyError as error:
                raise _duplicate(commit, error) from error
        self._appended()
        return stored

    async def load_stream(self, stream_id: str, after_version: int = 0) -> list[Envelope]:
        self._check_open()
        query = {"stream_id": stream_id, "first_version": {"$gt": after_version}}
        with translated_errors():
            documents = (
                await self._commits.find(query, projection={"events": True})
                .sort("first_version", ASCENDING)
                .to_list(None)
            )
        if not documents and after_version == 0:
            raise StreamNotFound(stream_id)
        return [stored_envelope(wire) for document in documents for wire in document["events"]]

    async def _find(
        self, query: dict[str, Any], sort: str, limit: int | None = None
    ) -> list[Commit]:
        self._check_open()
        with translated_errors():
            cursor = self._commits.find(query).sort(sort, ASCENDING)
            if limit is not None:
                cursor = cursor.limit(limit)
            documents = await cursor.to_list(None)
        return [_commit(document) for document in documents]

    async def stream_commits(self, stream_id: str) -> list[Commit]:
        return await self._find({"stream_id": stream_id}, "first_version")

    async def read_all(
        self, after_position: int = 0, batch_size: int = 500
    ) -> AsyncIterator[Commit]:
        position = after_position
        while True:
            batch = await self._find({"_id": {"$gt": position}}, "_id", batch_size)
            for commit in batch:
                yield commit
            if len(batch) < batch_size:
                return
            position = batch[-1].position

    async def read_by_stream(self, batch_size: int = 500) -> AsyncIterator[Commit]:
        after_stream, after_version = "", 0
        while True:  # keyset pages over the (stream_id, first_version) unique index
            self._check_open()
            query = {
                "$or": [
                    {"stream_id": {"$gt": after_stream}},
                    {"stream_id": after_stream, "first_version": {"$gt": after_version}},
                ]
            }
            with translated_errors():
                cursor = (
                    self._commits.find(query)
                    .sort([("stream_id", ASCENDING), ("first_version", ASCENDING)])
                    .limit(batch_size)
                )
                documents = await cursor.to_list(None)
            batch = [_commit(document) for document in documents]
            for commit in batch:
                yield commit
            if len(batch) < batch_size:
                return
            after_stream, after_version = batch[-1].stream_id, batch[-1].first_version

    async def commit_by_causation(self, causation_id: str, handler: str = "") -> Commit | None:
        found = await self._find({"causation_id": causation_id, "handler": handler}, "_id", 1)
        return found[0] if found else None

    async def unpublished(self, limit: int = 500) -> list[Commit]:
        return await self._find({"published": False}, "_id", limit)

    async def backlog(self, now: datetime, overdue_after: timedelta) -> Backlog:
        self._check_open()
        with translated_errors():
            unpublished = await self._commits.count_documents({"published": False})
        oldest = await self.unpublished(limit=1) if unpublished else []
        return Backlog(
            unpublished=unpublished,
            oldest_unpublished_at=oldest[0].events[0].occurred_at if oldest else None,
            timers_due=await self._pending_timers_due_by(now),
            timers_overdue=await self._pending_timers_due_by(now - overdue_after),
        )

    async def _pending_timers_due_by(self, moment: datetime) -> int:
        due = {"pending_timers.due_at": {"$lte": bson_time(moment)}}
        pipeline: list[dict[str, Any]] = [
            {"$match": due},
            {"$unwind": "$pending_timers"},
            {"$match": due},
            {"$group": {"_id": None, "count": {"$sum": 1}}},
        ]
        with translated_errors():
            counts = await aggregate(self._commits, pipeline)
        return int(counts[0]["count"]) if counts else 0

    async def mark_published(self, positions: Sequence[int], fence: Fence | None = None) -> None:
        self._check_open()
        if positions:
            with translated_errors():
                await self._check_fence(fence)
                await self._commits.update_many(
                    {"_id": {"$in": list(positions)}}, {"$set": {"published": True}}
                )

    async def due_timers(self, now: datetime, limit: int = 100) -> list[DueTimer]:
        self._check_open()
        due = {"pending_timers.due_at": {"$lte": bson_time(now)}}
        pipeline: list[dict[str, Any]] = [
            {"$match": due},
            {"$unwind": "$pending_timers"},
            {"$match": due},
            {"$sort": {"pending_timers.due_at": 1, "pending_timers.timer_id": 1}},
            {"$limit": limit},
        ]
        with translated_errors():
            documents = await aggregate(self._commits, pipeline)
        return [
            DueTimer(
                timer_id=timer["timer_id"],
                stream_id=document["stream_id"],
                name=timer["name"],
                due_at=aware(timer["due_at"]),
                data=timer["data"],
            )
            for document in documents
            for timer in (document["pending_timers"],)
        ]

    async def complete_timer(self, timer_id: str, fence: Fence | None = None) -> None:
        self._check_open()
        with translated_errors():
            await self._check_fence(fence)
            await self._commits.update_one(
                {"pending_timers.timer_id": timer_id},
                {"$pull": {"pending_timers": {"timer_id": timer_id}}},
            )

    async def try_lease(self, name: str, owner: str, ttl: timedelta, now: datetime) -> Fence | None:
        """A renewal in time keeps the epoch; a grant afresh (a takeover, or a renewal after
        expiry) increments it. Each is one atomic single-document write."""
        self._check_open()
        moment, until = bson_time(now), bson_time(now + ttl)
        with translated_errors():
            renewed = await self._leases.find_one_and_update(
                {"_id": name, "owner": owner, "expires_at": {"$gt": moment}},
                {"$set": {"expires_at": until}},
                return_document=ReturnDocument.AFTER,
            )
            if renewed is not None:
                return Fence(name, owner, int(renewed.get("epoch", 0)))
            try:
                granted = await self._leases.find_one_and_update(
                    {"_id": name, "$or": [{"owner": owner}, {"expires_at": {"$lte": moment}}]},
                    {"$set": {"owner": owner, "expires_at": until}, "$inc": {"epoch": 1}},
                    upsert=True,
                    return_document=ReturnDocument.AFTER,
                )
            except DuplicateKeyError:
                return None
        return Fence(name, owner, int(granted["epoch"]))

    async def release_lease(self, name: str, owner: str) -> None:
        self._check_open()
        with translated_errors():
            await self._leases.update_one(
                {"_id": name, "owner": owner}, {"$set": {"expires_at": datetime(1970, 1, 1)}}
            )

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._client is not None:
            with translated_errors():
                await self._client.close()


def _document(commit: Commit, wires: list[dict[str, Any]], new: NewCommit) -> dict[str, Any]:
    return {
        "_id": commit.position,
        "stream_id": commit.stream_id,
        "first_version": commit.first_version,
        "last_version": commit.last_version,
        "events": wires,
        "topic": commit.topic,
        "partition_key": commit.partition_key,
        "causation_id": commit.causation_id,
        "handler": commit.handler,
        "trace_context": commit.trace_context,
        "prev_hash": commit.prev_hash,
        "hash": commit.hash,
        "published": False,
        "timer_ids": [timer.timer_id for timer in new.timers],
        "pending_timers": [
            {
                "timer_id": timer.timer_id,
                "name": timer.name,
                "due_at": bson_time(timer.due_at, round_up=True),
                "data": dict(timer.data),
            }
            for timer in new.timers
        ],
    }


def _commit(document: dict[str, Any]) -> Commit:
    return Commit(
        position=int(document["_id"]),
        stream_id=document["stream_id"],
        first_version=document["first_version"],
        events=tuple(stored_envelope(wire) for wire in document["events"]),
        topic=document["topic"],
        partition_key=document["partition_key"],
        causation_id=document.get("causation_id"),
        prev_hash=document["prev_hash"],
        hash=document["hash"],
        published=bool(document["published"]),
        handler=document.get("handler", ""),
        trace_context=document.get("trace_context", ""),
    )


def _duplicate(commit: NewCommit, error: DuplicateKeyError) -> Exception:
    if commit.causation_id is not None and duplicate_key_on(error, DEDUPE_INDEX, "causation_id"):
        return DuplicateCausation(commit.causation_id, commit.handler)
    if duplicate_key_on(error, STREAM_INDEX, "first_version"):
        return ConcurrencyConflict(commit.stream_id, commit.expected_version)
    if duplicate_key_on(error, TIMER_ID_INDEX, "timer_ids"):
        return ValueError(f"a timer id of the commit to {commit.stream_id} already exists")
    return EventStoreError(f"MongoDB refused the commit to {commit.stream_id}: {error}")
