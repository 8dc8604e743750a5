"""Backends for the contract suites: every adapter of a port runs the same tests.

Ids: `sqlite`, `memory-fake`, `mongo-fake-mongomock` (mongomock-motor: a fake that checks query
shapes, not MongoDB's behaviour) and `mongodb-real` (a real server from MONGODB_URL or a
testcontainers MongoDB replica set from compose's image; skipped with its reason when neither is
available).
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
from mongomock_motor import AsyncMongoMockClient
from pymongo import AsyncMongoClient
from pymongo.errors import ServerSelectionTimeoutError

from shared.kernel.eventstore.memory import InMemoryEventStore
from shared.kernel.eventstore.mongo import MongoEventStore
from shared.kernel.eventstore.port import EventStore, EventStoreError
from shared.kernel.eventstore.sqlite import SQLiteEventStore, Synchronous
from shared.kernel.readmodel.memory import InMemoryDocumentStore
from shared.kernel.readmodel.mongo import MongoDocumentStore
from shared.kernel.readmodel.port import DocumentStore
from shared.kernel.readmodel.sqlite import SQLiteDocumentStore
from tests.containers import docker_answers, mongodb_replica_set

NO_REAL_MONGODB = "no real MongoDB: set MONGODB_URL or run a Docker daemon"

BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("sqlite-full", id="sqlite-full"),
    pytest.param("memory-fake", id="memory-fake"),
    pytest.param("mongo-fake-mongomock", id="mongo-fake-mongomock"),
    pytest.param(
        "mongodb-real", id="mongodb-real", marks=[pytest.mark.mongodb, pytest.mark.docker]
    ),
]


@pytest.fixture(scope="session")
def real_mongodb_url() -> Iterator[str]:
    """One real MongoDB for the whole session, or a skip that says why there is none."""
    url = os.environ.get("MONGODB_URL")
    if url:
        yield url
        return
    if not docker_answers():
        pytest.skip(NO_REAL_MONGODB)
    with mongodb_replica_set() as url:  # a replica set, as compose and Kubernetes run it
        yield url


class Backend:
    """Opens store instances over one shared storage, and reaches under them to break it."""

    name: str
    concurrent_commits_per_writer = 100
    opened: list[EventStore | DocumentStore]

    async def open(self) -> EventStore:
        """A new store instance over the same storage (the fake: the same instance)."""
        store = await self._open()
        self.opened.append(store)
        return store

    async def open_documents(self) -> DocumentStore:
        store = await self._open_documents()
        self.opened.append(store)
        return store

    async def _open(self) -> EventStore:
        raise AssertionError("every backend overrides _open")

    async def _open_documents(self) -> DocumentStore:
        raise AssertionError("every backend overrides _open_documents")

    async def edit_event_data(
        self, stream_id: str, first_version: int, data: dict[str, Any]
    ) -> None:
        """Rewrite the first event's data of a stored commit directly through the driver."""
        raise AssertionError("every backend overrides edit_event_data")

    async def broken(self) -> EventStore | None:
        """A store whose driver fails on use; None when the backend has no driver."""
        return None

    async def aclose(self) -> None:
        for store in self.opened:
            with contextlib.suppress(EventStoreError):
                await store.close()


class SQLiteBackend(Backend):
    """`synchronous=NORMAL` (the default: appends on the event loop's thread) or `FULL`
    (appends on the writer's thread, concurrent ones group-committed)."""

    name = "sqlite"

    def __init__(self, directory: Path, synchronous: Synchronous = "NORMAL") -> None:
        self.opened = []
        self.path = directory / "service.db"
        self.directory = directory
        self.synchronous: Synchronous = synchronous
        if synchronous != "NORMAL":
            self.name = f"sqlite-{synchronous.lower()}"

    async def _open(self) -> EventStore:
        return await SQLiteEventStore.open(str(self.path), synchronous=self.synchronous)

    async def _open_documents(self) -> DocumentStore:
        return await SQLiteDocumentStore.open(str(self.path))

    async def edit_event_data(
        self, stream_id: str, first_version: int, data: dict[str, Any]
    ) -> None:
        with sqlite3.connect(self.path) as connection:
            connection.execute(
                "UPDATE commits SET events = json_set(events, '$[0].data', json(?)) "
                "WHERE stream_id = ? AND first_version = ?",
                (json.dumps(data), stream_id, first_version),
            )
        connection.close()

    async def broken(self) -> EventStore | None:
        garbage = self.directory / "not-a-database.db"
        garbage.write_bytes(b"this is not an SQLite file" * 100)
        return await self.open_at(garbage)

    async def open_at(self, path: Path) -> EventStore:
        store = await SQLiteEventStore.open(str(path), synchronous=self.synchronous)
        self.opened.append(store)
        return store


class MemoryBackend(Backend):
    name = "memory-fake"

    def __init__(self) -> None:
        self.opened = []
        self.store = InMemoryEventStore()
        self.documents = InMemoryDocumentStore()

    async def _open(self) -> EventStore:
        return self.store

    async def _open_documents(self) -> DocumentStore:
        return self.documents

    async def edit_event_data(
        self, stream_id: str, first_version: int, data: dict[str, Any]
    ) -> None:
        commits = self.store._commits
        for position, commit in commits.items():
            if commit.stream_id == stream_id and commit.first_version == first_version:
                edited = commit.events[0].model_copy(update={"data": data})
                commits[position] = replace(commit, events=(edited, *commit.events[1:]))


class _FailingCollection:
    """Stands in for a collection whose server went away: every call fails like PyMongo does."""

    def __getattr__(self, name: str) -> Any:
        def fail(*args: Any, **kwargs: Any) -> Any:
            raise ServerSelectionTimeoutError("no servers available (simulated)")

        return fail


class MongomockBackend(Backend):
    name = "mongo-fake-mongomock"
    # mongomock answers every call without suspending, so its writers never interleave: a
    # smaller load exercises the same code; the full load only costs time (it scans per query).
    concurrent_commits_per_writer = 20

    def __init__(self) -> None:
        self.opened = []
        self.client: Any = AsyncMongoMockClient()
        self.database = self.client["yellowcart_test"]

    async def _open(self) -> EventStore:
        return await MongoEventStore.open(self.database)

    async def _open_documents(self) -> DocumentStore:
        return MongoDocumentStore(self.database)

    async def edit_event_data(
        self, stream_id: str, first_version: int, data: dict[str, Any]
    ) -> None:
        await self.database["commits"].update_one(
            {"stream_id": stream_id, "first_version": first_version},
            {"$set": {"events.0.data": data}},
        )

    async def broken(self) -> EventStore | None:
        store = await MongoEventStore.open(self.database)
        store._commits = _FailingCollection()
        return store


class RealMongoBackend(MongomockBackend):
    name = "mongodb-real"

    def __init__(self, url: str) -> None:
        self.opened = []
        self.client = AsyncMongoClient(url, serverSelectionTimeoutMS=5000)
        self.database_name = f"yellowcart_test_{uuid4().hex[:12]}"
        self.database = self.client[self.database_name]

    async def broken(self) -> EventStore | None:
        unreachable: AsyncMongoClient[Any] = AsyncMongoClient(
            "mongodb://127.0.0.1:1", serverSelectionTimeoutMS=200
        )
        return MongoEventStore(unreachable["yellowcart"], client=unreachable)

    async def aclose(self) -> None:
        await super().aclose()
        await self.client.drop_database(self.database_name)
        await self.client.close()


@pytest.fixture(params=BACKENDS)
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    chosen: Backend
    if request.param == "sqlite":
        chosen = SQLiteBackend(tmp_path)
    elif request.param == "sqlite-full":
        chosen = SQLiteBackend(tmp_path, "FULL")
    elif request.param == "memory-fake":
        chosen = MemoryBackend()
    elif request.param == "mongo-fake-mongomock":
        chosen = MongomockBackend()
    else:
        chosen = RealMongoBackend(request.getfixturevalue("real_mongodb_url"))
    yield chosen
    await chosen.aclose()
